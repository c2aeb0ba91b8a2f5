"""
Sans-IO WebSocket frames (RFC 6455 section 5) for the relay's hot path: the header of the frames
we send, and a reader for the one kind of frame a viewer sends on every keystroke and mouse
move, a masked, final, binary data frame.

The reader takes exactly those frames, and only between Autobahn's messages; it hands back, as
bytes, everything from the first header it does not take: a text, continuation or control
frame, a frame with RSV bits, an unmasked frame, a length not in its shortest form (section
5.2), a frame over the size limit. Those go to Autobahn, whose state machine then decides
(pong, close handshake, fragmented message, or the close code of a violation). So the
verdicts on anything unusual are Autobahn's by construction, and the reader only has to be
right about what it takes: an unfragmented binary message is a frame that leaves Autobahn's
state as it found it.

Unmasking: a Python big-integer XOR for payload pieces under L{SMALL} bytes, Autobahn's
masker (its NVX C code, or wsaccel on Debian 12) above; measured per piece (docs/performance.md):
16 bytes 0.9 vs 6.2 us, 1 KiB even, 64 KiB 288 vs 10 us.
"""

import struct

from autobahn.websocket.xormasker import create_xor_masker

#: Pieces shorter than this are unmasked with an integer XOR, longer ones by Autobahn's masker.
SMALL = 1024
_BINARY_FINAL = 0x82
_LONGEST_HEADER = 14
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def websocket_header(length):
    """
    The header of one unmasked, final, binary WebSocket frame carrying C{length} bytes (RFC 6455
    section 5.2: 0x82, then the length in 7 bits, or 126 and 16 bits, or 127 and 64 bits).
    """
    if length < 126:
        return bytes((_BINARY_FINAL, length))
    if length < 0x10000:
        return struct.pack("!BBH", _BINARY_FINAL, 126, length)
    return struct.pack("!BBQ", _BINARY_FINAL, 127, length)


def unmask(data, mask, offset=0):
    """
    C{data} XOR the 4-byte C{mask}, for a piece starting C{offset} bytes into its payload.
    """
    shift = offset & 3
    if shift:
        mask = mask[shift:] + mask[:shift]
    n = len(data)
    if n < SMALL:
        key = (mask * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return create_xor_masker(mask, n).process(data)


def _parse_header(buf):
    """
    (header length, payload length, mask) of the binary frame at the start of C{buf}; C{None}
    when more bytes are needed; C{False} when this frame is not one the reader takes.
    """
    if len(buf) < 2:
        return None if not buf or buf[0] == _BINARY_FINAL else False
    if buf[0] != _BINARY_FINAL or not buf[1] & 0x80:
        return False
    length = buf[1] & 0x7F
    if length < 126:
        start = 2
    elif length == 126:
        start = 4
        if len(buf) < start:
            return None
        length = _U16.unpack_from(buf, 2)[0]
        if length < 126:
            return False
    else:
        start = 10
        if len(buf) < start:
            return None
        length = _U64.unpack_from(buf, 2)[0]
        if length < 0x10000 or length >> 63:
            return False
    if len(buf) < start + 4:
        return None
    return start + 4, length, bytes(buf[start:start + 4])


class BinaryFrameReader:
    """
    Reads a viewer's masked, final, binary frames (see the module docstring).

    @param max_payload: the largest payload taken (0: no limit); a bigger frame is handed
        back, for Autobahn to refuse with its close code.
    """

    def __init__(self, max_payload=0):
        self._max = max_payload
        self._head = b""  # an incomplete header
        self._mask = None  # while inside a frame's payload
        self._left = 0
        self._offset = 0

    @property
    def inside_frame(self):
        """
        Whether the reader holds part of a frame (so the next bytes are its own).
        """
        return self._mask is not None or bool(self._head)

    def receive(self, data):
        """
        Feed the bytes received.

        @return: C{(payloads, rest)}: the unmasked payload pieces, in order, and C{None}, or the
            bytes from the first frame the reader does not take onward (the reader is then
            between frames, as Autobahn must be when it gets them).
        """
        payloads = []
        if self._head:
            data = self._head + data
            self._head = b""
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            if self._mask is None:
                header = _parse_header(view[pos:pos + _LONGEST_HEADER])
                if header is None:
                    self._head = data[pos:]
                    break
                if header is False or (self._max and header[1] > self._max):
                    return payloads, data[pos:]
                size, self._left, self._mask = header
                self._offset = 0
                pos += size
                if not self._left:
                    self._mask = None
                continue
            take = min(self._left, end - pos)
            payloads.append(unmask(data[pos:pos + take], self._mask, self._offset))
            pos += take
            self._offset += take
            self._left -= take
            if not self._left:
                self._mask = None
        return payloads, None


__all__ = ["SMALL", "BinaryFrameReader", "unmask", "websocket_header"]
