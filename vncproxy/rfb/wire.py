"""
RFB (RFC 6143) wire formats common to every phase of the handshake: integers,
ProtocolVersion and its negotiation, reason strings, ClientInit and ServerInit,
and the limits on what a peer may send.

Every byte layout the handshake reads or writes lives in this module or, for the
security phase (security types, SecurityResult, refusals, VeNCrypt), in
L{vncproxy.rfb.security}, so the state machines in L{vncproxy.rfb.upstream} and
L{vncproxy.rfb.downstream} deal only in Python values.  All integers are
big-endian ("network order"); every C{struct} format here starts with C{"!"}.

Parsers take a buffer and return C{None} when it does not hold a complete
item yet ("need more data"); they raise L{ProtocolError} when the bytes can
never become valid.
"""

from __future__ import annotations

import struct
import unicodedata

__all__ = [
    "CHALLENGE_LENGTH",
    "MAX_BUFFERED",
    "MAX_DESKTOP_NAME_LENGTH",
    "MAX_REASON_LENGTH",
    "RFB_3_3",
    "RFB_3_7",
    "RFB_3_8",
    "VERSION_LENGTH",
    "ProtocolError",
    "client_init",
    "decode_reason",
    "encode_reason",
    "encode_version",
    "negotiate_version",
    "pack_u8",
    "pack_u32",
    "parse_reason",
    "parse_server_init",
    "parse_u8",
    "parse_u32",
    "parse_version",
]


class ProtocolError(ValueError):
    """
    The peer sent bytes that can never form a valid message here.
    """


RFB_3_3 = (3, 3)
RFB_3_7 = (3, 7)
RFB_3_8 = (3, 8)

#: Apple Remote Desktop announces this minor; it speaks the 3.3 handshake.
_APPLE_MINOR = 889

#: C{b"RFB xxx.yyy\\n"}
VERSION_LENGTH = 12

#: Length of the VNC Authentication challenge and of its response.
CHALLENGE_LENGTH = 16

#: Longest failure reason accepted from a peer; longer is a protocol error.
MAX_REASON_LENGTH = 4096

#: Longest desktop name accepted in a VNC server's ServerInit (QEMU sends "QEMU (<domain
#: name>)"; libvirt names are far shorter); longer is a protocol error.
MAX_DESKTOP_NAME_LENGTH = 4096

#: Most bytes a machine keeps buffered before its handshake ends.
MAX_BUFFERED = 64 * 1024

_U8 = struct.Struct("!B")
_U32 = struct.Struct("!I")


# -- integers ---------------------------------------------------------------


def pack_u8(value: int) -> bytes:
    """
    @param value: 0..255.
    @return: one byte.
    """
    return _U8.pack(value)


def pack_u32(value: int) -> bytes:
    """
    @param value: 0..2**32-1.
    @return: four bytes, big-endian.
    """
    return _U32.pack(value)


def parse_u8(buffer: bytes | bytearray) -> int | None:
    """
    @param buffer: received bytes.
    @return: the first byte as an integer, or C{None} if C{buffer} is empty.
    """
    if len(buffer) < _U8.size:
        return None
    return _U8.unpack_from(buffer)[0]


def parse_u32(buffer: bytes | bytearray) -> int | None:
    """
    @param buffer: received bytes.
    @return: the leading big-endian U32, or C{None} if fewer than 4 bytes.
    """
    if len(buffer) < _U32.size:
        return None
    return _U32.unpack_from(buffer)[0]


# -- ProtocolVersion --------------------------------------------------------


def encode_version(version: tuple[int, int]) -> bytes:
    """
    @param version: C{(major, minor)}, each 0..999.
    @return: the 12-byte ProtocolVersion message, e.g. C{b"RFB 003.008\\n"}.
    """
    major, minor = version
    return b"RFB %03d.%03d\n" % (major, minor)


def parse_version(message: bytes | bytearray) -> tuple[int, int]:
    """
    Parse a ProtocolVersion message strictly: C{b"RFB "}, three ASCII
    digits, C{b"."}, three ASCII digits, C{b"\\n"}.

    @param message: exactly L{VERSION_LENGTH} bytes.
    @return: C{(major, minor)} as announced (not yet negotiated).
    @raise ProtocolError: if the message is malformed.
    """
    message = bytes(message)
    major, minor = message[4:7], message[8:11]
    if (
        len(message) != VERSION_LENGTH
        or message[:4] != b"RFB "
        or message[7:8] != b"."
        or message[11:] != b"\n"
        or not (major.isdigit() and minor.isdigit())
    ):
        raise ProtocolError(f"malformed RFB protocol version {message!r}")
    return int(major), int(minor)


def negotiate_version(announced: tuple[int, int]) -> tuple[int, int]:
    """
    Map the version the peer announced to the handshake we will speak.

    3.7 and 3.8 are themselves; any later version (3.9 and up, 4.x, ...)
    becomes 3.8; every other 3.x (3.3, the unofficial 3.4-3.6, Apple's 3.889)
    becomes 3.3, as RFC 6143 section 7.1.1 says.

    @param announced: C{(major, minor)} from L{parse_version}.
    @return: one of L{RFB_3_3}, L{RFB_3_7}, L{RFB_3_8}.
    @raise ProtocolError: for major versions below 3.
    """
    major, minor = announced
    if major < 3:
        raise ProtocolError(f"unsupported RFB protocol version {major}.{minor}")
    if major > 3:
        return RFB_3_8
    if minor == 7:
        return RFB_3_7
    if minor >= 8 and minor != _APPLE_MINOR:
        return RFB_3_8
    return RFB_3_3


# -- reason strings ---------------------------------------------------------


def encode_reason(reason: str) -> bytes:
    """
    @param reason: text for the peer.
    @return: C{U32 length} followed by the UTF-8 bytes.
    """
    raw = reason.encode("utf-8")
    return pack_u32(len(raw)) + raw


def parse_reason(buffer: bytes | bytearray) -> tuple[str, int] | None:
    """
    Parse C{U32 length + reason} sent by a peer.

    @param buffer: received bytes.
    @return: C{(reason, consumed)} with the reason cleaned by
        L{decode_reason}, or C{None} if incomplete.
    @raise ProtocolError: if the length exceeds L{MAX_REASON_LENGTH}
        (detected as soon as the length field is complete).
    """
    length = parse_u32(buffer)
    if length is None:
        return None
    if length > MAX_REASON_LENGTH:
        raise ProtocolError(
            f"reason string of {length} bytes exceeds {MAX_REASON_LENGTH}"
        )
    end = _U32.size + length
    if len(buffer) < end:
        return None
    return decode_reason(buffer[_U32.size : end]), end


def decode_reason(raw: bytes | bytearray) -> str:
    """
    Make a peer's reason safe to log and show: decode UTF-8 (invalid
    sequences replaced), drop control and format characters (this removes
    QEMU's trailing NUL, newlines, escapes and bidi overrides), strip spaces.

    @param raw: the reason bytes.
    @return: the cleaned text, or C{"(no reason given)"} if nothing is left.
    """
    text = bytes(raw).decode("utf-8", errors="replace")
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf"))
    return text.strip() or "(no reason given)"


# -- initialisation ---------------------------------------------------------


def client_init(shared: bool) -> bytes:
    """
    @param shared: whether other clients may stay connected.
    @return: the one-byte ClientInit message (C{b"\\x01"} for shared).
    """
    return pack_u8(1 if shared else 0)


#: ServerInit before the name: U16 width, U16 height, the 16-byte PIXEL_FORMAT, U32 name length.
_SERVER_INIT = struct.Struct("!HHBBBBHHHBBB3xI")


def parse_server_init(buffer: bytes | bytearray) -> tuple[bytes, int] | None:
    """
    Parse and check a VNC server's ServerInit (RFC 6143 section 7.3.2).

    @param buffer: received bytes.
    @return: C{(the ServerInit bytes unchanged, consumed)}, or C{None} if incomplete.
    @raise ProtocolError: as soon as the header shows a desktop name longer than
        L{MAX_DESKTOP_NAME_LENGTH}, a bits-per-pixel other than 8, 16 or 32, a depth of 0 or
        above it, or a true-colour flag other than 0 or 1.
    """
    if len(buffer) < _SERVER_INIT.size:
        return None
    (_width, _height, bpp, depth, _big_endian, true_colour, *_rest,
     name_length) = _SERVER_INIT.unpack_from(buffer)
    if name_length > MAX_DESKTOP_NAME_LENGTH:
        raise ProtocolError(f"desktop name of {name_length} bytes exceeds "
                            f"{MAX_DESKTOP_NAME_LENGTH}")
    if bpp not in (8, 16, 32) or not 0 < depth <= bpp or true_colour not in (0, 1):
        raise ProtocolError(f"impossible pixel format (bits-per-pixel {bpp}, "
                            f"depth {depth}, true-colour {true_colour})")
    end = _SERVER_INIT.size + name_length
    if len(buffer) < end:
        return None
    return bytes(buffer[:end]), end
