"""
Unmasking a read's WebSocket payloads in place with the C functions of Autobahn's NVX masker
(C{_nvx_xormasker}, the cffi module Autobahn builds; private: Autobahn's own wrapper makes a
cffi masker object, with a copy in and a copy out, per frame).

Per read: one copy of the read into a C{bytearray}, one C{ffi.from_buffer} on it, then per
frame C{nvx_xormask_new} on the mask bytes where they already are in the buffer,
C{nvx_xormask_process} over the payload in place (SSE2 where it was compiled with it) and
C{nvx_xormask_free}; then the payloads joined once. The reader gives it only reads that carry
at least L{vncproxy.relay.wsframes.SMALL} payload bytes: below, for a keystroke or a mouse
move, the public unmasker's integer XOR is cheaper.

The switch is C{[relay] websocket_unmask}. It applies only where Autobahn itself unmasks with
NVX (its public C{autobahn.websocket.USES_NVX}); elsewhere (Debian 12's Autobahn, which uses
wsaccel, or C{AUTOBAHN_USE_NVX=0}) the reader keeps the public unmasker, with no warning.
Where it applies, L{vncproxy.relay._assumptions.websocket_unmask} checks at start that the
module and its functions exist and unmask known vectors (every alignment, every mask phase)
as RFC 6455 says.
"""

import autobahn.websocket

try:
    from _nvx_xormasker import ffi as _ffi
    from _nvx_xormasker import lib as _lib
except ImportError:  # Debian 12's Autobahn has no NVX: the check keeps this path off
    _ffi = _lib = None
else:
    _new, _process, _free, _null = (_lib.nvx_xormask_new, _lib.nvx_xormask_process,
                                    _lib.nvx_xormask_free, _ffi.NULL)


def unmask_spans(data, spans, lead):
    """
    What L{vncproxy.relay.wsframes.unmask_spans} gives, by Autobahn's NVX functions (see the
    module docstring).
    """
    buf = bytearray(data)
    base = _ffi.from_buffer("uint8_t[]", buf)
    new, process, free, null = _new, _process, _free, _null
    view = memoryview(buf)
    pieces = []
    if lead is not None:
        masker = new(_ffi.from_buffer("uint8_t[]", lead[1]))
        if masker == null:
            raise MemoryError("nvx_xormask_new")
        process(masker, base, lead[0])
        free(masker)
        pieces.append(view[:lead[0]])
    for start, n, mask_at in spans:
        masker = new(base + mask_at)
        if masker == null:
            raise MemoryError("nvx_xormask_new")
        process(masker, base + start, n)
        free(masker)
        pieces.append(view[start:start + n])
    return b"".join(pieces)


def applies():
    """
    Whether Autobahn unmasks with NVX here (so this fast path has something to use).
    """
    return bool(getattr(autobahn.websocket, "USES_NVX", False))


__all__ = ["applies", "unmask_spans"]
