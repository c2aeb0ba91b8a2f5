"""
The HTTP CONNECT request that opens an xvpvnc console (Nova's xvp viewer protocol), parsed
sans-IO: feed bytes to L{ConnectRequestParser.receive_data} until it returns the request.

What the Java xvp viewer sends, and what we accept::

    CONNECT /console?token=TOKEN HTTP/1.0 CRLF
    (any header lines) CRLF
    CRLF

The method must be C{CONNECT} and the version C{HTTP/1.0} or C{HTTP/1.1}; lines may end in
CRLF or a bare LF; headers are read and ignored. The whole request is at most
L{MAX_REQUEST} bytes, and a first byte that cannot start C{CONNECT } is refused at once, so
junk never waits for a time-out. The answers (L{RESPONSES}) are exact byte strings: the xvp
viewer checks for the prefix C{HTTP/1.1 200 }.
"""

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

#: Longest request (request line plus headers plus the blank line) we read.
MAX_REQUEST = 8 * 1024

_METHOD = b"CONNECT "
#: The blank line ending the headers: LF, optional CR, LF (so CRLF CRLF, LF LF and mixes).
_BLANK_LINE = re.compile(rb"\n\r?\n")
#: What a request target may not hold (below 0x21, and DEL): one search, not a loop per character.
_CONTROL_OR_SPACE = re.compile("[\x00-\x20\x7f]")
_VERSIONS = ("HTTP/1.0", "HTTP/1.1")

RESPONSES = {
    200: b"HTTP/1.1 200 OK\r\n\r\n",
    400: b"HTTP/1.1 400 Invalid Request\r\n\r\n",
    401: b"HTTP/1.1 401 Not Authorized\r\n\r\n",
    409: b"HTTP/1.1 409 Conflict\r\n\r\n",
    429: b"HTTP/1.1 429 Too Many Requests\r\n\r\n",
}


class BadRequest(ValueError):
    """
    The bytes are not a CONNECT request we accept (the message says why; safe to log).
    """


@dataclass(frozen=True)
class ConnectRequest:
    """
    @ivar target: the request target, e.g. C{/console?token=...} (it holds the token: never
        log it).
    @ivar version: C{"HTTP/1.0"} or C{"HTTP/1.1"}.
    @ivar token: the C{token} query parameter, or C{None} when absent or empty.
    @ivar leftover: bytes received after the blank line (the start of the RFB stream).
    """

    target: str
    version: str
    token: str | None
    leftover: bytes

    def __repr__(self):  # the target and the token are secrets
        return f"ConnectRequest(version={self.version!r}, token={'...' if self.token else None})"


def starts_like_connect(data):
    """
    @param data: the first bytes a client sent.
    @return: whether they can be the start of a CONNECT request.
    """
    head = bytes(data[: len(_METHOD)])
    return _METHOD.startswith(head)


class ConnectRequestParser:
    """
    Accumulates bytes until a complete request. After a result or an error it must not be fed
    again.
    """

    def __init__(self, max_size=MAX_REQUEST):
        self._buffer = bytearray()
        self._max_size = max_size

    def receive_data(self, data):
        """
        @param data: bytes from the client, in chunks of any size.
        @return: the L{ConnectRequest} once the blank line arrived, else C{None}.
        @raise BadRequest: as soon as the bytes cannot become an acceptable request.
        """
        self._buffer += data
        if not starts_like_connect(self._buffer):
            raise BadRequest("not a CONNECT request")
        blank = _BLANK_LINE.search(self._buffer)
        if blank is None:
            if len(self._buffer) > self._max_size:
                raise BadRequest(f"request longer than {self._max_size} bytes")
            return None
        if blank.end() > self._max_size:
            raise BadRequest(f"request longer than {self._max_size} bytes")
        head = bytes(self._buffer[: blank.start()])
        leftover = bytes(self._buffer[blank.end():])
        return _parse_head(head, leftover)


def _parse_head(head, leftover):
    lines = head.split(b"\n")
    request_line = lines[0].rstrip(b"\r")
    try:
        text = request_line.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("request line is not ASCII") from None
    parts = text.split(" ")
    if len(parts) != 3 or parts[0] != "CONNECT":
        raise BadRequest("malformed request line")
    _, target, version = parts
    if version not in _VERSIONS:
        raise BadRequest("unsupported HTTP version")
    if not target or _CONTROL_OR_SPACE.search(target):
        raise BadRequest("malformed request target")
    for line in lines[1:]:
        if b":" not in line and line[:1] not in (b" ", b"\t"):  # a header or a continuation
            raise BadRequest("malformed header line")
    try:
        # urlsplit refuses an absolute-form target with a bad host ("http://[x/"): ValueError.
        query = urlsplit(target).query
        values = parse_qs(query, keep_blank_values=True).get("token") or [""]
    except ValueError:
        raise BadRequest("malformed request target") from None
    token = values[0] or None
    return ConnectRequest(target=target, version=version, token=token, leftover=leftover)


__all__ = ["BadRequest", "ConnectRequest", "ConnectRequestParser", "MAX_REQUEST", "RESPONSES",
           "starts_like_connect"]
