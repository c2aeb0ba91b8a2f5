"""
Tests for L{vncproxy.httpconnect}: the CONNECT request of the xvpvnc listener, fed whole, byte
by byte, in random pieces, and as junk.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.chunks import split
from vncproxy.httpconnect import (
    MAX_REQUEST,
    RESPONSES,
    BadRequest,
    ConnectRequest,
    ConnectRequestParser,
    starts_like_connect,
)

TOKEN = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo"

#: (name, request bytes, expected token, expected version)
GOOD = [
    ("java-xvp-viewer", f"CONNECT /console?token={TOKEN} HTTP/1.0\r\n\r\n", TOKEN, "HTTP/1.0"),
    ("http-1.1-with-headers",
     f"CONNECT /console?token={TOKEN} HTTP/1.1\r\nHost: proxy.example:6081\r\n"
     "User-Agent: Java/1.8\r\nProxy-Connection: keep-alive\r\n\r\n", TOKEN, "HTTP/1.1"),
    ("bare-lf", f"CONNECT /console?token={TOKEN} HTTP/1.0\n\n", TOKEN, "HTTP/1.0"),
    ("mixed-line-ends", f"CONNECT /console?token={TOKEN} HTTP/1.1\r\nHost: x\n\r\n",
     TOKEN, "HTTP/1.1"),
    ("folded-header", f"CONNECT /console?token={TOKEN} HTTP/1.1\r\nX-A: 1\r\n  2\r\n\r\n",
     TOKEN, "HTTP/1.1"),
    ("token-among-parameters", f"CONNECT /console?a=1&token={TOKEN}&b=2 HTTP/1.1\r\n\r\n",
     TOKEN, "HTTP/1.1"),
    ("percent-encoded", "CONNECT /console?token=a%2Db HTTP/1.1\r\n\r\n", "a-b", "HTTP/1.1"),
    ("no-token", "CONNECT /console HTTP/1.1\r\n\r\n", None, "HTTP/1.1"),
    ("empty-token", "CONNECT /console?token= HTTP/1.0\r\n\r\n", None, "HTTP/1.0"),
    ("authority-form-target", "CONNECT proxy.example:6081 HTTP/1.1\r\n\r\n", None, "HTTP/1.1"),
]

JUNK = [
    ("get", b"GET /console?token=x HTTP/1.1\r\n\r\n", "not a CONNECT request"),
    ("lower-case-method", b"connect /console?token=x HTTP/1.1\r\n\r\n", "not a CONNECT request"),
    ("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "not a CONNECT request"),
    ("rfb-version", b"RFB 003.008\n", "not a CONNECT request"),
    ("http-2", b"CONNECT /console?token=x HTTP/2.0\r\n\r\n", "unsupported HTTP version"),
    ("http-0.9", b"CONNECT /console?token=x\r\n\r\n", "malformed request line"),
    ("double-space", b"CONNECT  /console?token=x HTTP/1.1\r\n\r\n", "malformed request line"),
    ("extra-part", b"CONNECT /console?token=x HTTP/1.1 extra\r\n\r\n", "malformed request line"),
    ("non-ascii-target", "CONNECT /cönsole?token=x HTTP/1.1\r\n\r\n".encode("utf-8"),
     "request line is not ASCII"),
    ("control-in-target", b"CONNECT /console?token=\x01x HTTP/1.1\r\n\r\n",
     "malformed request target"),
    ("header-without-colon", b"CONNECT /console?token=x HTTP/1.1\r\nnonsense\r\n\r\n",
     "malformed header line"),
]


def feed(chunks):
    """@return: the results of each chunk (None until the request is complete)."""
    parser = ConnectRequestParser()
    results = []
    for chunk in chunks:
        results.append(parser.receive_data(chunk))
        if results[-1] is not None:
            break
    return results


@pytest.mark.parametrize("name, text, token, version", GOOD, ids=[g[0] for g in GOOD])
def test_whole(name, text, token, version):
    """A complete request in one piece yields its token, version and no leftover."""
    [request] = feed([text.encode()])
    assert (request.token, request.version, request.leftover) == (token, version, b"")


@pytest.mark.parametrize("name, text, token, version", GOOD, ids=[g[0] for g in GOOD])
def test_one_byte_at_a_time(name, text, token, version):
    """Byte by byte, nothing is returned until the last byte of the blank line."""
    data = text.encode()
    results = feed([bytes([b]) for b in data])
    assert len(results) == len(data)
    assert results[:-1] == [None] * (len(data) - 1)
    assert results[-1].token == token


@pytest.mark.parametrize("name, text, token, version", GOOD, ids=[g[0] for g in GOOD])
def test_random_splits_with_rfb_after(name, text, token, version):
    """In any pieces, the request is the same, and bytes after it come back as leftover."""
    data = text.encode() + b"RFB 003.008\n"

    @given(cuts=st.lists(st.integers(0, len(data))))
    def check(cuts):
        chunks = split(data, cuts)
        results = feed(chunks)
        request = results[-1]
        assert request.token == token and request.version == version
        assert request.leftover + b"".join(chunks[len(results):]) == b"RFB 003.008\n"

    check()


@pytest.mark.parametrize("name, data, reason", JUNK, ids=[j[0] for j in JUNK])
def test_junk_whole(name, data, reason):
    """Junk is refused with a reason that never holds the token."""
    with pytest.raises(BadRequest) as e:
        feed([data])
    assert str(e.value) == reason


@pytest.mark.parametrize("name, data, reason", JUNK, ids=[j[0] for j in JUNK])
def test_junk_byte_by_byte(name, data, reason):
    """Fed byte by byte, junk is refused with the same reason, and as early as possible."""
    parser = ConnectRequestParser()
    with pytest.raises(BadRequest) as e:
        for i, b in enumerate(data):
            assert parser.receive_data(bytes([b])) is None
    assert str(e.value) == reason
    if reason == "not a CONNECT request":
        assert i < len(b"CONNECT ")


def test_oversized_request_is_refused_without_a_blank_line():
    """A request that grows past MAX_REQUEST bytes without ending is refused."""
    parser = ConnectRequestParser()
    parser.receive_data(b"CONNECT /console?token=")
    with pytest.raises(BadRequest, match="longer than"):
        for _ in range(MAX_REQUEST // 1000 + 1):
            parser.receive_data(b"x" * 1000)


def test_request_of_exactly_the_maximum_size_is_accepted():
    """A request of MAX_REQUEST bytes including its blank line is read."""
    head = b"CONNECT /console?token=t HTTP/1.1\r\nX-Pad: "
    data = head + b"p" * (MAX_REQUEST - len(head) - 4) + b"\r\n\r\n"
    assert len(data) == MAX_REQUEST
    [request] = feed([data])
    assert request.token == "t"
    with pytest.raises(BadRequest, match="longer than"):
        feed([data[:-4] + b"p\r\n\r\n"])


def test_responses_are_exact():
    """The status lines are exactly what the contract (and the Java viewer) expects."""
    assert RESPONSES[200] == b"HTTP/1.1 200 OK\r\n\r\n"
    assert RESPONSES[401] == b"HTTP/1.1 401 Not Authorized\r\n\r\n"
    assert RESPONSES[400] == b"HTTP/1.1 400 Invalid Request\r\n\r\n"


def test_repr_hides_the_token():
    """A logged request never shows its token or target."""
    [request] = feed([f"CONNECT /console?token={TOKEN} HTTP/1.0\r\n\r\n".encode()])
    assert TOKEN not in repr(request) and isinstance(request, ConnectRequest)


def test_starts_like_connect():
    """Only prefixes of 'CONNECT ' (and longer data starting with it) look like a request."""
    assert starts_like_connect(b"") and starts_like_connect(b"CONN")
    assert starts_like_connect(b"CONNECT /x")
    assert not starts_like_connect(b"CONNECTX") and not starts_like_connect(b"\0")


@given(stream=st.binary(max_size=300), data=st.data())
def test_fuzz_never_raises_anything_else(stream, data):
    """Arbitrary bytes give a request, need more, or BadRequest: never another exception."""
    parser = ConnectRequestParser()
    try:
        for chunk in split(stream, data.draw(st.lists(st.integers(0, len(stream))))):
            if parser.receive_data(chunk) is not None:
                break
    except BadRequest:
        pass


@given(prefix_cut=st.integers(0, 60), tail=st.binary(max_size=100), data=st.data())
def test_fuzz_valid_prefix_then_garbage(prefix_cut, tail, data):
    """A valid request prefix followed by garbage never raises anything but BadRequest."""
    stream = GOOD[1][1].encode()[:prefix_cut] + tail
    parser = ConnectRequestParser()
    try:
        for chunk in split(stream, data.draw(st.lists(st.integers(0, len(stream))))):
            result = parser.receive_data(chunk)
            if result is not None:
                assert isinstance(result, ConnectRequest)
                break
    except BadRequest:
        pass
