"""
RFB (RFC 6143) wire formats of the security phase: the security types offered and chosen (3.3,
3.7 and 3.8 forms), SecurityResult, the server's refusal, and VeNCrypt's own negotiation
(security type 19: its version, its subtype list and the subtype chosen).

The messages common to every phase (integers, ProtocolVersion, reason strings, ClientInit,
ServerInit) are in L{vncproxy.rfb.wire}; between them, the two modules hold every byte layout
the handshake machines read or write, with the same conventions: big-endian, parsers return
C{None} for "need more data" and raise L{ProtocolError<vncproxy.rfb.wire.ProtocolError>} for
bytes that can never become valid.
"""

from __future__ import annotations

import enum
import struct

from vncproxy.rfb.wire import RFB_3_3, RFB_3_8, encode_reason, pack_u8, pack_u32, parse_u8

__all__ = [
    "SECURITY_RESULT_FAILED",
    "SECURITY_RESULT_OK",
    "VENCRYPT_VERSION",
    "SecurityType",
    "VeNCryptSubtype",
    "describe_security_types",
    "describe_vencrypt_subtypes",
    "encode_refusal",
    "encode_security_choice",
    "encode_security_result",
    "encode_security_type_33",
    "encode_security_types",
    "encode_vencrypt_subtype",
    "encode_vencrypt_version",
    "parse_security_types",
    "parse_vencrypt_subtypes",
    "parse_vencrypt_version",
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


SECURITY_RESULT_OK = 0
SECURITY_RESULT_FAILED = 1


# -- security types and result -------------------------------------------------


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
    return _describe(types, SecurityType)


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
    end = 1 + count * 4
    if len(buffer) < end:
        return None
    return list(struct.unpack_from(f"!{count}I", buffer, 1)), end


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
    return _describe(subtypes, VeNCryptSubtype)


def _describe(numbers: list[int], names: type[enum.IntEnum]) -> str:
    described = []
    for number in numbers:
        try:
            described.append(f"{number} ({names(number).name})")
        except ValueError:
            described.append(str(number))
    return ", ".join(described) or "none"
