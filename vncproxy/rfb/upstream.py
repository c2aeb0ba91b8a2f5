"""
The RFB client side of the handshake, run by the proxy toward QEMU's VNC
server.  Sans-IO: feed received bytes to L{UpstreamHandshake.receive_data},
send what L{UpstreamHandshake.data_to_send} returns.

Theory of operation, one wire step per state (S = VNC server, C = us):

 1. C{AWAIT_VERSION}: S sends C{RFB xxx.yyy\\n}.  C answers 3.3 for 3.0-3.6
    and Apple's 3.889, 3.7 for 3.7, 3.8 for 3.8 and anything later; a major
    version below 3 or a malformed line fails.
 2. Security.
    - C{AWAIT_SECURITY_TYPES} (3.7, 3.8): S sends C{U8 count, count x U8}.
      C picks None if offered, else VNC Authentication if offered and we
      have a password, and sends the choice as U8.  Count 0 means refusal.
    - C{AWAIT_SECURITY_TYPE_33} (3.3): S sends the chosen type as U32
      (0 refusal, 1 None, 2 VNC Authentication); C sends nothing.
    - C{AWAIT_REFUSAL_REASON}: after a refusal S sends C{U32 length +
      reason}; we fail with it.
 3. C{AWAIT_CHALLENGE} (VNC Authentication): S sends 16 bytes; C sends the
    DES response (L{vncproxy.rfb.vncauth.vnc_response}).
 4. C{AWAIT_SECURITY_RESULT}: S sends U32 0 (ok) or nonzero (failed).  It
    comes after VNC Authentication in every version, after None only in 3.8
    (3.3 and 3.7 skip this step for None).
    - C{AWAIT_FAILURE_REASON} (3.8 only): a failed result is followed by
      C{U32 length + reason}; we fail with it.
 5. C{DONE}: emit L{SecurityAccepted}.  The glue sends ClientInit
    (C{wire.client_init(True)}); ServerInit and everything after is relayed.

C{FAILED} is reached from any step on unexpected input, with exactly one
L{HandshakeFailed}.  Bytes after the handshake are returned in
L{SecurityAccepted.leftover}, never consumed.  A VeNCrypt sub-machine would
slot in as another entry of C{_security_starters} (announcing L{StartTLS}).
"""

from __future__ import annotations

import enum

from vncproxy.rfb import wire
from vncproxy.rfb._machine import HandshakeMachine
from vncproxy.rfb.events import SecurityAccepted
from vncproxy.rfb.vncauth import vnc_response
from vncproxy.rfb.wire import SecurityType

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
    DONE = 8
    FAILED = 9


class UpstreamHandshake(HandshakeMachine):
    """
    RFB client handshake up to (not including) ClientInit.

    @ivar state: the current L{UpstreamState}.
    @ivar version: the negotiated version once step 1 is done, else C{None}.
    """

    _DONE = UpstreamState.DONE
    _FAILED = UpstreamState.FAILED

    def __init__(self, password: bytes | None = None) -> None:
        """
        @param password: the VNC password, or C{None} if the server is not
            expected to ask for one.
        """
        super().__init__(UpstreamState.AWAIT_VERSION)
        self._password = password
        self.version: tuple[int, int] | None = None
        self._handlers = {
            UpstreamState.AWAIT_VERSION: self._on_version,
            UpstreamState.AWAIT_SECURITY_TYPES: self._on_security_types,
            UpstreamState.AWAIT_SECURITY_TYPE_33: self._on_security_type_33,
            UpstreamState.AWAIT_REFUSAL_REASON: self._on_refusal_reason,
            UpstreamState.AWAIT_CHALLENGE: self._on_challenge,
            UpstreamState.AWAIT_SECURITY_RESULT: self._on_security_result,
            UpstreamState.AWAIT_FAILURE_REASON: self._on_failure_reason,
        }
        # Security types we can run, in order of preference.
        self._security_starters = {
            SecurityType.NONE: self._start_none,
            SecurityType.VNC_AUTH: self._start_vnc_auth,
        }

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
        types = self._take_parsed(wire.parse_security_types)
        if types is None:
            return False
        if not types:
            self.state = UpstreamState.AWAIT_REFUSAL_REASON
            return True
        chosen = self._choose(types)
        if chosen is not None:
            self._send(wire.encode_security_choice(chosen))
            self._security_starters[chosen]()
        return True

    def _choose(self, offered: list[int]) -> SecurityType | None:
        """
        @param offered: the server's security types.
        @return: the type to use, or C{None} after failing.
        """
        if SecurityType.NONE in offered:
            return SecurityType.NONE
        if SecurityType.VNC_AUTH in offered:
            if self._password is None:
                self._fail("VNC server requires a password but none is configured")
                return None
            return SecurityType.VNC_AUTH
        listed = wire.describe_security_types(offered)
        if SecurityType.VENCRYPT in offered:
            self._fail(
                "VNC server requires VeNCrypt (type 19), which is not supported "
                f"yet (offered: {listed})"
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
        elif chosen == SecurityType.VNC_AUTH and self._password is None:
            self._fail("VNC server requires a password but none is configured")
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
        if result == wire.SECURITY_RESULT_OK:
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
