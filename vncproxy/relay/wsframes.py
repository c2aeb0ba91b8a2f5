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

Per read, the reader walks the headers in place (no slice per frame) and collects the payload
spans; one call then unmasks them all and joins them into the one C{bytes} that goes to QEMU.
That call is an I{unmasker}: L{unmask_spans} here (public names only: an integer XOR for short
payloads, Autobahn's masker above, which is wsaccel's on Debian 12), or, behind its switch,
L{vncproxy.relay.nvxmask.unmask_spans}, which unmasks in place with Autobahn's compiled NVX
functions. Costs are in docs/performance.md.
"""

import struct

from autobahn.websocket.xormasker import create_xor_masker

try:  # Debian 12's Autobahn unmasks with wsaccel's Cython masker: cheap from a few bytes up
    from wsaccel.xormask import createXorMasker as _wsaccel_masker
except ImportError:  # pragma: no cover (the newest Autobahn does not use wsaccel)
    _wsaccel_masker = None

#: Pieces shorter than this are unmasked with an integer XOR, longer ones by Autobahn's masker
#: (a cffi object per piece with NVX; a Cython one, cheaper than the XOR above 32 bytes, with
#: wsaccel).
SMALL = 32 if create_xor_masker is _wsaccel_masker else 1024
_BINARY_FINAL = 0x82
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
    C{data} (bytes-like) XOR the 4-byte C{mask}, for a piece starting C{offset} bytes into its
    payload.
    """
    shift = offset & 3
    if shift:
        mask = mask[shift:] + mask[:shift]
    n = len(data)
    if n < SMALL:
        key = (mask * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return create_xor_masker(mask, n).process(data)


def unmask_spans(data, spans, lead):
    """
    The unmasked payloads of one read, joined: the public unmasker.

    @param data: the read (C{bytes}).
    @param spans: C{(start, length, mask_at)} of each payload piece in C{data}, in order, its
        4-byte mask at C{data[mask_at:]} (the piece starts its frame's payload).
    @param lead: C{None}, or C{(length, mask)}: C{data} begins with that many bytes of a
        payload begun in an earlier read, C{mask} already turned to where they start.
    """
    if lead is None and len(spans) == 1:  # a keystroke, a mouse move
        start, n, mask_at = spans[0]
        return unmask(data[start:start + n], data[mask_at:mask_at + 4])
    view = memoryview(data)
    pieces = [] if lead is None else [unmask(view[:lead[0]], lead[1])]
    for start, n, mask_at in spans:
        pieces.append(unmask(view[start:start + n], data[mask_at:mask_at + 4]))
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class BinaryFrameReader:
    """
    Reads a viewer's masked, final, binary frames (see the module docstring).

    @param max_payload: the largest payload taken (0: no limit); a bigger frame is handed
        back, for Autobahn to refuse with its close code.
    @param unmasker: what unmasks reads that carry L{SMALL} payload bytes or more:
        L{unmask_spans} or one with its signature (smaller reads: always L{unmask_spans}).
    """

    def __init__(self, max_payload=0, unmasker=unmask_spans):
        self._max = max_payload or (1 << 63) - 1
        self._unmask = unmasker
        self._head = b""  # an incomplete header
        self._mask = None  # while inside a frame's payload: its mask, turned to where it goes on
        self._left = 0  # the payload bytes still to come

    @property
    def inside_frame(self):
        """
        Whether the reader holds part of a frame (so the next bytes are its own).
        """
        return bool(self._left or self._head)

    def receive(self, data):
        """
        Feed the bytes received.

        @return: C{(payload, rest)}: the unmasked payload bytes this read completed or
            continued, joined (C{b""} when none), and C{None}, or the bytes from the first
            frame the reader does not take onward (the reader is then between frames, as
            Autobahn must be when it gets them).
        """
        if self._head:
            data = self._head + data
            self._head = b""
        elif not self._left:
            # One short frame alone in the read (a keystroke, a mouse move): its payload,
            # without the walk below. A masked length byte is 0x80 + n; n = 0 and the longer
            # length forms take the walk.
            n = len(data) - 6
            if 0 < n < 126 and data[0] == _BINARY_FINAL and data[1] == 0x80 + n \
                    and n <= self._max:
                return unmask(data[6:], data[2:6]), None
        end = len(data)
        lead = None
        pos = total = 0
        if self._left:
            pos = total = min(self._left, end)
            lead = (pos, self._mask)
            self._left -= pos
            if self._left:
                shift = pos & 3
                self._mask = self._mask[shift:] + self._mask[:shift]
                return (self._unmask if pos >= SMALL else unmask_spans)(data, (), lead), None
            self._mask = None
        spans = []
        rest = None
        limit = self._max
        while pos < end:
            if data[pos] != _BINARY_FINAL:
                rest = data[pos:]
                break
            if end - pos < 2:
                self._head = data[pos:]
                break
            n = data[pos + 1]
            if n < 0x80:  # unmasked
                rest = data[pos:]
                break
            n &= 0x7F
            if n < 126:
                mask_at = pos + 2
            elif n == 126:
                mask_at = pos + 4
                if mask_at > end:
                    self._head = data[pos:]
                    break
                n = data[pos + 2] << 8 | data[pos + 3]
                if n < 126:
                    rest = data[pos:]
                    break
            else:
                mask_at = pos + 10
                if mask_at > end:
                    self._head = data[pos:]
                    break
                n = _U64.unpack_from(data, pos + 2)[0]
                if n < 0x10000 or n >> 63:
                    rest = data[pos:]
                    break
            start = mask_at + 4
            if start > end:
                self._head = data[pos:]
                break
            if n > limit:
                rest = data[pos:]
                break
            pos = start + n
            if pos > end:  # the payload goes on in the next reads
                self._left = pos - end
                taken = end - start
                shift = taken & 3
                mask = data[mask_at:start]
                self._mask = mask[shift:] + mask[:shift]
                if taken:
                    spans.append((start, taken, mask_at))
                    total += taken
                break
            if n:
                spans.append((start, n, mask_at))
                total += n
        if total >= SMALL:
            return self._unmask(data, spans, lead), rest
        if total:
            return unmask_spans(data, spans, lead), rest
        return b"", rest


__all__ = ["SMALL", "BinaryFrameReader", "unmask", "unmask_spans", "websocket_header"]
