"""
The client side of RFC 6455, just enough for the benchmark and the flow-control test: the
opening handshake, masked binary frames out, frames in (payload pieces handed on without
copying, control frames returned whole). Sans-IO: it never touches a socket.

Kept small and fast on purpose: the benchmark client must never be the bottleneck it measures.
"""

import base64
import hashlib
import os
import struct

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class HandshakeError(Exception):
    """
    The server refused the upgrade or answered something that is not a WebSocket upgrade.
    """

    def __init__(self, status, head):
        first_line = head.split(b"\r\n", 1)[0]
        super().__init__(f"WebSocket upgrade refused: {first_line!r}")
        self.status = status
        self.head = head


class ProtocolError(Exception):
    """
    The server sent a frame a client must not accept.
    """


def new_key():
    return base64.b64encode(os.urandom(16))


def handshake_request(host, path, key, protocols=("binary",)):
    """
    The HTTP upgrade request (no Origin: a native client, as the proxy allows).
    """
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key.decode()}",
             "Sec-WebSocket-Version: 13"]
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def check_handshake_response(head, key):
    """
    @param head: the response up to and including the blank line.
    @raise HandshakeError: unless it is a valid 101 answer to C{key}.
    """
    status_line, _, rest = head.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if status != 101:
        raise HandshakeError(status, head)
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    headers = {}
    for line in rest.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get(b"sec-websocket-accept") != accept:
        raise HandshakeError(status, head)


def mask(payload, key):
    """
    XOR C{payload} with the 4-byte C{key} repeated (one big-integer operation: C speed).
    """
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little")


def encode(payload, opcode=OP_BINARY):
    """
    One final, masked frame carrying C{payload}.
    """
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + mask(payload, key)


def prepared(data, websocket, variants=64):
    """
    C{data} as a client sends it on the wire, made before a measure's clock starts: on a
    WebSocket, C{variants} frames each masked with a key of its own (a browser masks every
    frame with a fresh key, and the server unmasks each alike), to be sent in turn; on raw TCP,
    the bytes themselves.
    """
    if not websocket:
        return [bytes(data)]
    return [encode(data) for _ in range(variants)]


def encode_close(code=1000, reason=b""):
    return encode(struct.pack("!H", code) + reason, OP_CLOSE)


class FrameDecoder:
    """
    Incremental decoder of the server's (unmasked) frames.

    L{feed} returns C{(data, controls)}: C{data} is a list of payload pieces of data frames
    (memoryviews into the bytes fed, in order; a frame may be split over several pieces and
    several calls), C{controls} a list of complete C{(opcode, payload)} control frames.
    """

    def __init__(self):
        self._head = b""
        self._left = 0  # payload bytes still to come in the current frame
        self._control = None  # (opcode, bytearray) while a control frame's payload arrives
        self.payload_bytes = 0

    def feed(self, data):
        if not self._head and not self._left and len(data) > 2 and data[0] == 0x82 \
                and data[1] == len(data) - 2 < 126:
            # one short binary frame alone in the read (a keystroke's echo): its payload
            self.payload_bytes += len(data) - 2
            return [memoryview(data)[2:]], []
        data = memoryview(data)
        pieces, controls = [], []
        pos, end = 0, len(data)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                piece = data[pos:pos + take]
                pos += take
                self._left -= take
                if self._control is None:
                    pieces.append(piece)
                    self.payload_bytes += take
                else:
                    self._control[1].extend(piece)
                    if not self._left:
                        controls.append((self._control[0], bytes(self._control[1])))
                        self._control = None
                continue
            # A frame header, possibly split over calls.
            if self._head:
                data = memoryview(self._head + bytes(data[pos:]))
                self._head, pos, end = b"", 0, len(data)
            if end - pos < 2:
                self._head = bytes(data[pos:])
                break
            b0, b1 = data[pos], data[pos + 1]
            if b1 & 0x80:
                raise ProtocolError("masked frame from the server")
            length, need = b1 & 0x7F, 2
            if length == 126:
                need = 4
            elif length == 127:
                need = 10
            if end - pos < need:
                self._head = bytes(data[pos:])
                break
            if length == 126:
                length = struct.unpack_from("!H", data, pos + 2)[0]
            elif length == 127:
                length = struct.unpack_from("!Q", data, pos + 2)[0]
            pos += need
            opcode = b0 & 0x0F
            if opcode >= 8:
                if length == 0:
                    controls.append((opcode, b""))
                    continue
                self._control = (opcode, bytearray())
            elif opcode not in (OP_CONT, OP_BINARY, OP_TEXT):
                raise ProtocolError(f"unknown opcode {opcode}")
            self._left = length
        return pieces, controls


def close_code(payload):
    """
    The status code and reason of a close frame's payload.
    """
    if len(payload) >= 2:
        return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
    return None, ""
