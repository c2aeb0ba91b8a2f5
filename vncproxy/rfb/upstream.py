"""
The RFB client side of the handshake, run by the proxy toward QEMU's VNC
server.  Sans-IO: feed received bytes to L{UpstreamHandshake.receive_data},
send what L{UpstreamHandshake.data_to_send} returns.

Theory of operation, one wire step per state (S = VNC server, C = us):

 1. C{AWAIT_VERSION}: S sends C{RFB xxx.yyy\n}.  C answers 3.3 for 3.0-3.6
    and Apple's 3.889, 3.7 for 3.7, 3.8 for 3.8 and anything later; a major
    version below 3 or a malformed line fails.
 2. Security.
    - C{AWAIT_SECURITY_TYPES} (3.7, 3.8): S sends C{U8 count, count x U8}.
      C picks VeNCrypt if offered and TLS is configured, else None, else
      VNC Authentication if we have a password, and sends the choice as U8.
      Count 0 means refusal.  VeNCrypt offered without TLS configured fails
      (never a silent fall back to plain).  With C{tls="x509"} (a CA is
      configured) VeNCrypt is required: a server offering only None or VNC
      Authentication fails before we answer anything, so nobody on the path
      gets a session in the clear or a DES response made with the password.
    - C{AWAIT_SECURITY_TYPE_33} (3.3): S sends the chosen type as U32
      (0 refusal, 1 None, 2 VNC Authentication); C sends nothing.  With
      C{tls="x509"} every 3.3 choice fails (3.3 cannot negotiate VeNCrypt).
    - C{AWAIT_REFUSAL_REASON}: after a refusal S sends C{U32 length +
      reason}; we fail with it.
 2v. VeNCrypt (type 19), the sub-negotiation:
    - C{AWAIT_VENCRYPT_VERSION}: S sends C{U8 major, U8 minor}; C needs
      0.2 or later and answers C{00 02} (an older server fails).
    - C{AWAIT_VENCRYPT_ACK}: S sends U8 0 (version ok) or nonzero (fail).
    - C{AWAIT_VENCRYPT_SUBTYPES}: S sends C{U8 count, count x U32}.  With
      C{tls="x509"} C picks X509None, else X509Vnc (needs the password);
      with C{tls="anonymous"} TLSNone, else TLSVnc.  Anything else fails,
      naming what was offered.  C sends the choice as U32.
    - C{AWAIT_VENCRYPT_ACCEPT}: S sends U8 1 (accepted) or 0 (fail).  Emit
      L{StartTLS}; S sent nothing more in the clear (bytes here fail).
    - C{AWAIT_TLS}: the glue starts TLS and calls
      L{tls_started<UpstreamHandshake.tls_started>}.  Then, inside TLS,
      the *Vnc subtypes go to step 3, the *None subtypes to step 4 (QEMU
      sends SecurityResult after VeNCrypt in every RFB version).
 3. C{AWAIT_CHALLENGE} (VNC Authentication): S sends 16 bytes; C sends the
    DES response (L{vncproxy.rfb.vncauth.vnc_response}).
 4. C{AWAIT_SECURITY_RESULT}: S sends U32 0 (ok) or nonzero (failed).  It
    comes after VNC Authentication and VeNCrypt in every version, after None
    only in 3.8 (3.3 and 3.7 skip this step for None).
    - C{AWAIT_FAILURE_REASON} (3.8 only): a failed result is followed by
      C{U32 length + reason}; we fail with it.
 5. C{DONE}: emit L{SecurityAccepted}.  The glue sends ClientInit
    (C{wire.client_init(True)}); ServerInit and everything after is relayed.

C{FAILED} is reached from any step on unexpected input, with exactly one
L{HandshakeFailed}.  Bytes after the handshake are returned in
L{SecurityAccepted.leftover}, never consumed.
"""

from __future__ import annotations

import enum

from vncproxy.rfb import security, wire
from vncproxy.rfb._machine import HandshakeMachine
from vncproxy.rfb.events import SecurityAccepted, StartTLS
from vncproxy.rfb.security import SecurityType, VeNCryptSubtype
from vncproxy.rfb.vncauth import vnc_response

__all__ = ["UpstreamHandshake", "UpstreamState"]


class UpstreamState(enum.Enum):
    """
    States of L{UpstreamHandshake}; see the module docstring.
    """

    AWAIT_VERSION = 1
    AWAIT_SECURITY_TYPES = 2
    AWAIT_SECURITY_TYPE_33 = 3
    AWAIT_REFUSAL_REASON = 4
    AWAIT_CHALLENGE = 5
    AWAIT_SECURITY_RESULT = 6
    AWAIT_FAILURE_REASON = 7
    AWAIT_VENCRYPT_VERSION = 10
    AWAIT_VENCRYPT_ACK = 11
    AWAIT_VENCRYPT_SUBTYPES = 12
    AWAIT_VENCRYPT_ACCEPT = 13
    AWAIT_TLS = 14
    DONE = 8
    FAILED = 9


#: VeNCrypt subtypes we can run, per TLS mode, in order of preference.
_SUBTYPES = {
    "x509": (VeNCryptSubtype.X509NONE, VeNCryptSubtype.X509VNC),
    "anonymous": (VeNCryptSubtype.TLSNONE, VeNCryptSubtype.TLSVNC),
}
_NEEDS_PASSWORD = (VeNCryptSubtype.X509VNC, VeNCryptSubtype.TLSVNC)
_PASSWORD_MISSING = "VNC server requires a password but none is configured"


def _vencrypt_required(offered: str) -> str:
    return ("VNC server does not offer VeNCrypt with X.509 but a CA is configured "
            f"([vnc] tls_ca): refusing to connect in the clear (offered: {offered})")


class UpstreamHandshake(HandshakeMachine):
    """
    RFB client handshake up to (not including) ClientInit.

    @ivar state: the current L{UpstreamState}.
    @ivar version: the negotiated version once step 1 is done, else C{None}.
    """

    _DONE = UpstreamState.DONE
    _FAILED = UpstreamState.FAILED

    def __init__(self, password: bytes | None = None, tls: str | None = None) -> None:
        """
        @param password: the VNC password, or C{None} if the server is not
            expected to ask for one.
        @param tls: which VeNCrypt subtypes we may run: C{None} (no TLS is
            configured: VeNCrypt fails closed), C{"x509"} (X509None/X509Vnc:
            the glue verifies the certificate) or C{"anonymous"}
            (TLSNone/TLSVnc: encryption without server authentication).
        @raise ValueError: for an unknown C{tls}.
        """
        super().__init__(UpstreamState.AWAIT_VERSION)
        if tls is not None and tls not in _SUBTYPES:
            raise ValueError(f"tls must be None, 'x509' or 'anonymous', not {tls!r}")
        self._password = password
        self._tls = tls
        self._subtype: VeNCryptSubtype | None = None
        self.version: tuple[int, int] | None = None
        self._handlers = {
            UpstreamState.AWAIT_VERSION: self._on_version,
            UpstreamState.AWAIT_SECURITY_TYPES: self._on_security_types,
            UpstreamState.AWAIT_SECURITY_TYPE_33: self._on_security_type_33,
            UpstreamState.AWAIT_REFUSAL_REASON: self._on_refusal_reason,
            UpstreamState.AWAIT_CHALLENGE: self._on_challenge,
            UpstreamState.AWAIT_SECURITY_RESULT: self._on_security_result,
            UpstreamState.AWAIT_FAILURE_REASON: self._on_failure_reason,
            UpstreamState.AWAIT_VENCRYPT_VERSION: self._on_vencrypt_version,
            UpstreamState.AWAIT_VENCRYPT_ACK: self._on_vencrypt_ack,
            UpstreamState.AWAIT_VENCRYPT_SUBTYPES: self._on_vencrypt_subtypes,
            UpstreamState.AWAIT_VENCRYPT_ACCEPT: self._on_vencrypt_accept,
            UpstreamState.AWAIT_TLS: self._on_tls_pending,
        }
        self._security_starters = {
            SecurityType.NONE: self._start_none,
            SecurityType.VNC_AUTH: self._start_vnc_auth,
            SecurityType.VENCRYPT: self._start_vencrypt,
        }

    # -- public ------------------------------------------------------------

    def tls_started(self) -> list:
        """
        After L{StartTLS}: the transport now speaks TLS; what it delivers
        from here on is the decrypted stream.

        @return: events completed by bytes buffered meanwhile (normally
            C{[]}); C{[]} if the machine already FAILED.
        @raise RuntimeError: if no TLS start is pending.
        """
        if self.state is UpstreamState.FAILED:
            return []
        if self.state is not UpstreamState.AWAIT_TLS:
            raise RuntimeError(f"no TLS start pending in {self.state}")
        if self._subtype in _NEEDS_PASSWORD:
            self.state = UpstreamState.AWAIT_CHALLENGE
        else:
            self.state = UpstreamState.AWAIT_SECURITY_RESULT
        return self._run()

    # -- step 1 ------------------------------------------------------------

    def _on_version(self) -> bool:
        message = self._take(wire.VERSION_LENGTH)
        if message is None:
            return False
        self.version = wire.negotiate_version(wire.parse_version(message))
        self._send(wire.encode_version(self.version))
        if self.version == wire.RFB_3_3:
            self.state = UpstreamState.AWAIT_SECURITY_TYPE_33
        else:
            self.state = UpstreamState.AWAIT_SECURITY_TYPES
        return True

    # -- step 2 ------------------------------------------------------------

    def _on_security_types(self) -> bool:
        types = self._take_parsed(security.parse_security_types)
        if types is None:
            return False
        if not types:
            self.state = UpstreamState.AWAIT_REFUSAL_REASON
            return True
        chosen = self._choose(types)
        if chosen is not None:
            self._send(security.encode_security_choice(chosen))
            self._security_starters[chosen]()
        return True

    def _choose(self, offered: list[int]) -> SecurityType | None:
        """
        @param offered: the server's security types.
        @return: the type to use, or C{None} after failing.
        """
        if SecurityType.VENCRYPT in offered and self._tls is not None:
            return SecurityType.VENCRYPT
        if self._tls == "x509":
            self._fail(_vencrypt_required(security.describe_security_types(offered)))
            return None
        if SecurityType.NONE in offered:
            return SecurityType.NONE
        if SecurityType.VNC_AUTH in offered:
            if self._password is None:
                self._fail(_PASSWORD_MISSING)
                return None
            return SecurityType.VNC_AUTH
        listed = security.describe_security_types(offered)
        if SecurityType.VENCRYPT in offered:
            self._fail(
                "VNC server requires TLS (VeNCrypt) but no CA is configured "
                f"([vnc] tls_ca) (offered: {listed})"
            )
        else:
            self._fail(f"VNC server offers no supported security type (offered: {listed})")
        return None

    def _on_security_type_33(self) -> bool:
        chosen = self._take_u32()
        if chosen is None:
            return False
        if chosen == SecurityType.INVALID:
            self.state = UpstreamState.AWAIT_REFUSAL_REASON
        elif self._tls == "x509" and chosen in (SecurityType.NONE, SecurityType.VNC_AUTH):
            self._fail(_vencrypt_required(security.describe_security_types([chosen])))
        elif chosen == SecurityType.VNC_AUTH and self._password is None:
            self._fail(_PASSWORD_MISSING)
        elif chosen in (SecurityType.NONE, SecurityType.VNC_AUTH):
            self._security_starters[SecurityType(chosen)]()
        else:
            self._fail(f"VNC server chose unsupported security type {chosen}")
        return True

    def _on_refusal_reason(self) -> bool:
        reason = self._take_parsed(wire.parse_reason)
        if reason is None:
            return False
        self._fail(f"VNC server refused the connection: {reason}")
        return True

    def _start_none(self) -> None:
        if self.version == wire.RFB_3_8:
            self.state = UpstreamState.AWAIT_SECURITY_RESULT
        else:
            self._succeed()

    def _start_vnc_auth(self) -> None:
        self.state = UpstreamState.AWAIT_CHALLENGE

    def _start_vencrypt(self) -> None:
        self.state = UpstreamState.AWAIT_VENCRYPT_VERSION

    # -- step 2v -----------------------------------------------------------

    def _on_vencrypt_version(self) -> bool:
        version = self._take_parsed(security.parse_vencrypt_version)
        if version is None:
            return False
        if version < security.VENCRYPT_VERSION:
            major, minor = version
            self._fail(f"VNC server speaks VeNCrypt {major}.{minor}; 0.2 is required")
            return True
        self._send(security.encode_vencrypt_version(security.VENCRYPT_VERSION))
        self.state = UpstreamState.AWAIT_VENCRYPT_ACK
        return True

    def _on_vencrypt_ack(self) -> bool:
        ack = self._take_u8()
        if ack is None:
            return False
        if ack != 0:
            self._fail("VNC server refused VeNCrypt version 0.2")
            return True
        self.state = UpstreamState.AWAIT_VENCRYPT_SUBTYPES
        return True

    def _on_vencrypt_subtypes(self) -> bool:
        subtypes = self._take_parsed(security.parse_vencrypt_subtypes)
        if subtypes is None:
            return False
        chosen = self._choose_subtype(subtypes)
        if chosen is not None:
            self._subtype = chosen
            self._send(security.encode_vencrypt_subtype(chosen))
            self.state = UpstreamState.AWAIT_VENCRYPT_ACCEPT
        return True

    def _choose_subtype(self, offered: list[int]) -> VeNCryptSubtype | None:
        """
        @param offered: the server's VeNCrypt subtypes.
        @return: the subtype to use, or C{None} after failing.
        """
        assert self._tls is not None  # VeNCrypt is only chosen with TLS configured
        usable = [s for s in _SUBTYPES[self._tls] if s in offered]
        for subtype in usable:
            if subtype not in _NEEDS_PASSWORD or self._password is not None:
                return subtype
        if usable:
            self._fail(_PASSWORD_MISSING)
            return None
        listed = security.describe_vencrypt_subtypes(offered)
        if self._tls == "x509":
            wanted = "X509None or X509Vnc (certificate-verified TLS)"
        else:
            wanted = "TLSNone or TLSVnc (anonymous TLS)"
        self._fail(f"VNC server offers no usable VeNCrypt subtype: need {wanted} "
                   f"(offered: {listed})")
        return None

    def _on_vencrypt_accept(self) -> bool:
        accepted = self._take_u8()
        if accepted is None:
            return False
        if accepted != 1:
            self._fail("VNC server rejected VeNCrypt subtype "
                       f"{security.describe_vencrypt_subtypes([self._subtype])}")
            return True
        assert self._subtype is not None
        if self._buffer:
            self._fail("protocol error: VNC server sent data in the clear before TLS")
            return True
        self.state = UpstreamState.AWAIT_TLS
        self._emit(StartTLS(self._subtype))
        return True

    def _on_tls_pending(self) -> bool:
        # The server waits for our TLS ClientHello: it has nothing to say in the clear.
        if self._buffer:
            self._fail("protocol error: VNC server sent data in the clear before TLS")
            return True
        return False

    # -- step 3 ------------------------------------------------------------

    def _on_challenge(self) -> bool:
        challenge = self._take(wire.CHALLENGE_LENGTH)
        if challenge is None:
            return False
        assert self._password is not None  # checked when choosing
        self._send(vnc_response(self._password, challenge))
        self.state = UpstreamState.AWAIT_SECURITY_RESULT
        return True

    # -- step 4 ------------------------------------------------------------

    def _on_security_result(self) -> bool:
        result = self._take_u32()
        if result is None:
            return False
        if result == security.SECURITY_RESULT_OK:
            self._succeed()
        elif self.version == wire.RFB_3_8:
            self.state = UpstreamState.AWAIT_FAILURE_REASON
        else:
            self._fail("VNC authentication failed")
        return True

    def _on_failure_reason(self) -> bool:
        reason = self._take_parsed(wire.parse_reason)
        if reason is None:
            return False
        self._fail(f"VNC authentication failed: {reason}")
        return True

    # -- step 5 ------------------------------------------------------------

    def _succeed(self) -> None:
        assert self.version is not None
        self.state = UpstreamState.DONE
        self._emit(SecurityAccepted(self.version, self._take_leftover()))
