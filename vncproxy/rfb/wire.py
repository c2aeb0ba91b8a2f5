"""
RFB (RFC 6143) wire formats used by the handshake machines.

Every byte layout the handshake reads or writes lives in this module, so the
state machines in L{vncproxy.rfb.upstream} and L{vncproxy.rfb.downstream}
deal only in Python values.  All integers are big-endian ("network order");
every C{struct} format here starts with C{"!"}.

Parsers take a buffer and return C{None} when it does not hold a complete
item yet ("need more data"); they raise L{ProtocolError} when the bytes can
never become valid.
"""

from __future__ import annotations

import enum
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
    "SECURITY_RESULT_FAILED",
    "SECURITY_RESULT_OK",
    "VERSION_LENGTH",
    "ProtocolError",
    "SecurityType",
    "VeNCryptSubtype",
    "client_init",
    "VENCRYPT_VERSION",
    "decode_reason",
    "describe_security_types",
    "describe_vencrypt_subtypes",
    "encode_reason",
    "encode_refusal",
    "encode_security_choice",
    "encode_security_result",
    "encode_security_type_33",
    "encode_security_types",
    "encode_vencrypt_subtype",
    "encode_vencrypt_version",
    "encode_version",
    "negotiate_version",
    "pack_u8",
    "pack_u32",
    "parse_reason",
    "parse_security_types",
    "parse_server_init",
    "parse_u8",
    "parse_u32",
    "parse_vencrypt_subtypes",
    "parse_vencrypt_version",
    "parse_version",
]


class SecurityType(enum.IntEnum):
    """
    RFB security types (RFC 6143 section 7.1.2 and the IANA registry).
    """

    INVALID = 0
    NONE = 1
    VNC_AUTH = 2
    RA2 = 5
    RA2NE = 6
    TIGHT = 16
    ULTRA = 17
    TLS = 18
    VENCRYPT = 19
    SASL = 20
    XVP = 22
    ARD = 30


class VeNCryptSubtype(enum.IntEnum):
    """
    VeNCrypt (security type 19) subtypes, sent as U32.
    """

    PLAIN = 256
    TLSNONE = 257
    TLSVNC = 258
    TLSPLAIN = 259
    X509NONE = 260
    X509VNC = 261
    X509PLAIN = 262
    X509SASL = 263
    TLSSASL = 264


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

SECURITY_RESULT_OK = 0
SECURITY_RESULT_FAILED = 1

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


# -- security ---------------------------------------------------------------


def encode_security_types(types: list[int]) -> bytes:
    """
    @param types: 1..255 security types to offer (3.7 and 3.8).
    @return: C{U8 count} followed by one U8 per type.
    """
    return pack_u8(len(types)) + bytes(types)


def parse_security_types(buffer: bytes | bytearray) -> tuple[list[int], int] | None:
    """
    Parse the 3.7/3.8 security type list.

    @param buffer: received bytes.
    @return: C{(types, consumed)}, or C{None} if incomplete.  An empty list
        means the server refused the connection; a reason string follows.
    """
    count = parse_u8(buffer)
    if count is None or len(buffer) < 1 + count:
        return None
    return list(buffer[1 : 1 + count]), 1 + count


def encode_security_type_33(security_type: int) -> bytes:
    """
    @param security_type: the type the server chose (3.3 only).
    @return: the type as U32.
    """
    return pack_u32(security_type)


def encode_security_choice(security_type: int) -> bytes:
    """
    @param security_type: the type the client chose (3.7 and 3.8).
    @return: the type as U8.
    """
    return pack_u8(security_type)


def encode_security_result(
    version: tuple[int, int], ok: bool, reason: str | None = None
) -> bytes:
    """
    @param version: the negotiated version.
    @param ok: whether security succeeded.
    @param reason: why it failed; sent only for failures in 3.8.
    @return: U32 SecurityResult, plus C{U32 length + reason} on a 3.8 failure.
    """
    if ok:
        return pack_u32(SECURITY_RESULT_OK)
    message = pack_u32(SECURITY_RESULT_FAILED)
    if version >= RFB_3_8:
        message += encode_reason(reason or "")
    return message


def encode_refusal(version: tuple[int, int], reason: str) -> bytes:
    """
    The server's "no security types / connection failed" message.

    @param version: the negotiated version.
    @param reason: why the connection is refused.
    @return: U32 0 (3.3) or U8 0 (3.7, 3.8), then C{U32 length + reason}.
    """
    if version == RFB_3_3:
        marker = encode_security_type_33(SecurityType.INVALID)
    else:
        marker = pack_u8(0)
    return marker + encode_reason(reason)


def describe_security_types(types: list[int]) -> str:
    """
    @param types: security type numbers.
    @return: a human-readable list such as C{"16 (TIGHT), 99"}.
    """
    names = []
    for number in types:
        try:
            names.append(f"{number} ({SecurityType(number).name})")
        except ValueError:
            names.append(str(number))
    return ", ".join(names) or "none"


# -- VeNCrypt (security type 19) -------------------------------------------------


#: The only VeNCrypt version spoken (0.1 used U8 subtypes and is obsolete).
VENCRYPT_VERSION = (0, 2)


def encode_vencrypt_version(version: tuple[int, int]) -> bytes:
    """
    @param version: C{(major, minor)}, each 0..255.
    @return: C{U8 major, U8 minor}.
    """
    major, minor = version
    return pack_u8(major) + pack_u8(minor)


def parse_vencrypt_version(buffer: bytes | bytearray) -> tuple[tuple[int, int], int] | None:
    """
    @param buffer: received bytes.
    @return: C{((major, minor), 2)}, or C{None} if fewer than 2 bytes.
    """
    if len(buffer) < 2:
        return None
    return (buffer[0], buffer[1]), 2


def parse_vencrypt_subtypes(buffer: bytes | bytearray) -> tuple[list[int], int] | None:
    """
    Parse the VeNCrypt 0.2 subtype list: C{U8 count} then C{count x U32}.

    @param buffer: received bytes.
    @return: C{(subtypes, consumed)}, or C{None} if incomplete.
    """
    count = parse_u8(buffer)
    if count is None:
        return None
    end = 1 + count * _U32.size
    if len(buffer) < end:
        return None
    subtypes = [_U32.unpack_from(buffer, 1 + i * _U32.size)[0] for i in range(count)]
    return subtypes, end


def encode_vencrypt_subtype(subtype: int) -> bytes:
    """
    @param subtype: the VeNCrypt subtype the client chose.
    @return: the subtype as U32.
    """
    return pack_u32(subtype)


def describe_vencrypt_subtypes(subtypes: list[int]) -> str:
    """
    @param subtypes: VeNCrypt subtype numbers.
    @return: a human-readable list such as C{"261 (X509VNC), 7"}.
    """
    names = []
    for number in subtypes:
        try:
            names.append(f"{number} ({VeNCryptSubtype(number).name})")
        except ValueError:
            names.append(str(number))
    return ", ".join(names) or "none"


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
