"""
A sans-IO reader of the RFB messages a viewer sends once the session runs (RFC 6143 §7.5 and
the extensions QEMU and noVNC use), to enforce view-only sessions: input messages are dropped
and counted, everything else passes unchanged, a message it cannot size ends the session.

Message lengths (type byte first; multi-byte numbers big-endian)::

      0  SetPixelFormat            20
      2  SetEncodings              4 + 4 * u16 count                       (bytes 2-3)
      3  FramebufferUpdateRequest  10
      4  KeyEvent                  8                                       input
      5  PointerEvent              6                                       input
      6  ClientCutText             8 + |s32 length| (negative: extended)   input
    150  EnableContinuousUpdates   10
    248  ClientFence               9 + u8 length (at most 64)
    251  xvp                       4                                       input (power)
    252  SetDesktopSize            8 + 16 * u8 screens                     input (resizes)
    253  gii                       4 + u16 length (endianness: bit 7 of byte 1)  input
    255  QEMU: 0 extended KeyEvent 12                                      input
               1 audio: u16 op 0 enable / 1 disable: 4; 2 set format: 10

Anything else (an unknown type, a QEMU submessage or audio operation we do not know, a fence
over 64 bytes) is a L{ClientProtocolError}: its length is unknown, so nothing after it could
be trusted. Input payloads that are dropped (a long ClientCutText) are skipped as they arrive,
never buffered.
"""

import struct

#: Message types whose content acts on the guest (keyboard, mouse, clipboard, power, size).
INPUT_NAMES = {4: "key", 5: "pointer", 6: "cut_text", 251: "xvp", 252: "desktop_size",
               253: "gii"}
_FIXED = {0: 20, 3: 10, 4: 8, 5: 6, 150: 10, 251: 4}
_MAX_FENCE = 64


class ClientProtocolError(Exception):
    """
    The viewer sent something that is not an RFB client message we can size; the message says
    what (safe to show: numbers only).
    """


def _length(buf):
    """
    The whole length of the message at the start of C{buf}, or C{None} while its header is
    incomplete.

    @raise ClientProtocolError: for a message that cannot be sized.
    """
    kind = buf[0]
    if kind in _FIXED:
        return _FIXED[kind]
    if kind == 2:
        return None if len(buf) < 4 else 4 + 4 * struct.unpack_from("!H", buf, 2)[0]
    if kind == 6:
        return None if len(buf) < 8 else 8 + abs(struct.unpack_from("!i", buf, 4)[0])
    if kind == 248:
        if len(buf) < 9:
            return None
        if buf[8] > _MAX_FENCE:
            raise ClientProtocolError(f"ClientFence payload of {buf[8]} bytes (at most 64)")
        return 9 + buf[8]
    if kind == 252:
        return None if len(buf) < 8 else 8 + 16 * buf[6]
    if kind == 253:
        if len(buf) < 4:
            return None
        order = ">" if buf[1] & 0x80 else "<"
        return 4 + struct.unpack_from(order + "H", buf, 2)[0]
    if kind == 255:
        if len(buf) < 2:
            return None
        if buf[1] == 0:
            return 12
        if buf[1] == 1:
            if len(buf) < 4:
                return None
            operation = struct.unpack_from("!H", buf, 2)[0]
            if operation in (0, 1):
                return 4
            if operation == 2:
                return 10
            raise ClientProtocolError(f"unknown QEMU audio operation {operation}")
        raise ClientProtocolError(f"unknown QEMU client message {buf[1]}")
    raise ClientProtocolError(f"unknown client message type {kind}")


def _input_name(buf):
    kind = buf[0]
    if kind == 255:
        return "key" if buf[1] == 0 else None
    return INPUT_NAMES.get(kind)


class ViewOnlyFilter:
    """
    The viewer->server stream of a view-only session, message by message.

    @ivar dropped: input messages dropped so far, by kind (C{key}, C{pointer}, C{cut_text},
        C{xvp}, C{desktop_size}, C{gii}).
    """

    def __init__(self):
        self.dropped = {}
        self._buf = bytearray()
        self._skip = 0  # bytes of a dropped message still to come

    @property
    def dropped_total(self):
        return sum(self.dropped.values())

    def receive(self, data):
        """
        @return: the bytes to forward to the server (whole messages only, in order).
        @raise ClientProtocolError: see the module docstring; the filter is then unusable.
        """
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        buf = self._buf
        buf += data
        out = []
        while buf:
            length = _length(buf)
            if length is None:
                break
            name = _input_name(buf)
            if name is not None:
                self.dropped[name] = self.dropped.get(name, 0) + 1
                n = min(length, len(buf))
                self._skip = length - n
                del buf[:n]
                continue
            if len(buf) < length:
                break
            out.append(bytes(buf[:length]))
            del buf[:length]
        return b"".join(out)
