"""
The RFB server side of the handshake, run by the proxy toward a VNC viewer
(noVNC, native viewers).  Sans-IO: call L{DownstreamHandshake.initiate},
feed received bytes to L{DownstreamHandshake.receive_data}, send what
L{DownstreamHandshake.data_to_send} returns.

Theory of operation, one wire step per state (S = us, C = the viewer):

 0. C{INITIAL}: nothing sent yet; L{DownstreamHandshake.initiate} queues
    C{RFB 003.008\\n}.  The viewer must be silent until then.
 1. C{AWAIT_VERSION}: C answers 12 bytes.  3.3, 3.7, 3.8 are themselves;
    3.0-3.6 and 3.889 are 3.3 (RFC 6143 section 7.1.1); later versions are
    3.8; malformed lines and majors below 3 fail (nothing sent back).
    When refusing, S now sends the refusal (U8 0 in 3.7/3.8, U32 0 in 3.3,
    then C{U32 length + reason}) and fails with that reason.
    With C{hold}, whether to refuse is decided later: the machine waits in
    C{AWAIT_AUTH_DECISION}, nothing sent, until L{accept
    <DownstreamHandshake.accept>} (step 2 follows) or L{reject
    <DownstreamHandshake.reject>} (the refusal); a decision taken before the
    version arrived applies when it does.  The glue greets a viewer at once
    and decides once the VNC server's side is known.
 2. Security.
    - 3.7/3.8, C{AWAIT_SECURITY_CHOICE}: S offered C{01 01} (None) or
      C{01 02} (VNC Authentication); C answers U8, which must be the offered
      type (else fail; in 3.8 after sending SecurityResult 1 + reason).
    - 3.3: S sends the type as U32 and C answers nothing; go on with 3 or 5.
 3. VNC Authentication: S sends a fresh 16-byte challenge.
    - C{AWAIT_AUTH_RESPONSE}: C sends 16 bytes; emit L{AuthResponse}.
    - C{AWAIT_AUTH_DECISION}: the glue checks the response and calls
      L{accept<DownstreamHandshake.accept>} or
      L{reject<DownstreamHandshake.reject>}.  Bytes arriving meanwhile are
      buffered.
 4. SecurityResult: S sends U32 0 after None only in 3.8; after VNC
    Authentication in every version U32 0 (accept) or U32 1 (reject; plus
    C{U32 length + reason} in 3.8).
 5. C{AWAIT_CLIENT_INIT}: C sends ClientInit (U8 shared flag); emit
    L{ClientInitReceived}, go to C{DONE}.  ServerInit is the glue's job.

C{FAILED} is reached from any step on unexpected input, with exactly one
L{HandshakeFailed}.  Bytes after ClientInit are returned in
L{ClientInitReceived.leftover}, never consumed.
"""

from __future__ import annotations

import enum
import os
from typing import Callable

from vncproxy.rfb import security, wire
from vncproxy.rfb._machine import Event, HandshakeMachine
from vncproxy.rfb.events import AuthResponse, ClientInitReceived
from vncproxy.rfb.security import SecurityType
from vncproxy.rfb.vncauth import new_challenge

__all__ = ["DownstreamHandshake", "DownstreamState"]

_UNSUPPORTED_CHOICE = "unsupported security type"


class DownstreamState(enum.Enum):
    """
    States of L{DownstreamHandshake}; see the module docstring.
    """

    INITIAL = 0
    AWAIT_VERSION = 1
    AWAIT_SECURITY_CHOICE = 2
    AWAIT_AUTH_RESPONSE = 3
    AWAIT_AUTH_DECISION = 4
    AWAIT_CLIENT_INIT = 5
    DONE = 6
    FAILED = 7


class DownstreamHandshake(HandshakeMachine):
    """
    RFB server handshake up to (and including) ClientInit.

    @ivar state: the current L{DownstreamState}.
    @ivar version: the negotiated version once step 1 is done, else C{None}.
    """

    _DONE = DownstreamState.DONE
    _FAILED = DownstreamState.FAILED

    def __init__(
        self,
        auth: str = "none",
        refuse: str | None = None,
        randbytes: Callable[[int], bytes] = os.urandom,
        hold: bool = False,
    ) -> None:
        """
        @param auth: C{"none"} (security type None) or C{"vnc"} (VNC
            Authentication; the glue judges the response).
        @param refuse: if set, refuse the connection with this reason right
            after the version exchange.
        @param randbytes: source of the challenge bytes (for tests); called
            once, here, when C{auth} is C{"vnc"}.
        @param hold: the refusal is decided later, after the version
            exchange (see the module docstring, step 1).
        @raise ValueError: for an unknown C{auth}, or if C{randbytes} does
            not return 16 bytes.
        """
        super().__init__(DownstreamState.INITIAL)
        if auth == "none":
            self._security_type = SecurityType.NONE
        elif auth == "vnc":
            self._security_type = SecurityType.VNC_AUTH
        else:
            raise ValueError(f"auth must be 'none' or 'vnc', not {auth!r}")
        self._refuse = refuse
        self._undecided = hold and refuse is None
        # Drawn now so that a broken randbytes fails here, not mid-handshake.
        self._challenge = new_challenge(randbytes) if auth == "vnc" else b""
        self.version: tuple[int, int] | None = None
        self._handlers = {
            DownstreamState.INITIAL: self._on_initial,
            DownstreamState.AWAIT_VERSION: self._on_version,
            DownstreamState.AWAIT_SECURITY_CHOICE: self._on_security_choice,
            DownstreamState.AWAIT_AUTH_RESPONSE: self._on_auth_response,
            DownstreamState.AWAIT_AUTH_DECISION: self._on_auth_decision,
            DownstreamState.AWAIT_CLIENT_INIT: self._on_client_init,
        }

    # -- public ------------------------------------------------------------

    @property
    def decision_pending(self) -> bool:
        """
        Whether L{accept} or L{reject} is awaited: after an L{AuthResponse},
        or with C{hold} until either was called.
        """
        if self.state is DownstreamState.FAILED:
            return False
        return self._undecided or self.state is DownstreamState.AWAIT_AUTH_DECISION

    def initiate(self) -> None:
        """
        Queue our ProtocolVersion (the server speaks first).

        @raise RuntimeError: if called twice.
        """
        if self.state is not DownstreamState.INITIAL:
            raise RuntimeError("initiate() called twice")
        self._send(wire.encode_version(wire.RFB_3_8))
        self.state = DownstreamState.AWAIT_VERSION

    def accept(self) -> list[Event]:
        """
        After an L{AuthResponse}: the response is good.  Queues
        SecurityResult OK and processes any bytes buffered meanwhile.  With
        C{hold}: the viewer is admitted; the security offer follows the
        version exchange.

        @return: events completed by bytes that were buffered while the
            decision was pending (a viewer that pipelines ClientInit gets
            L{ClientInitReceived} here, not from C{receive_data}): handle
            them like C{receive_data}'s.  C{[]} if the machine already FAILED.
        @raise RuntimeError: if no decision is pending.
        """
        if self.state is DownstreamState.FAILED:
            return []
        self._check_decision_pending()
        if self._undecided:  # held after the version (or before it: then nothing yet)
            self._undecided = False
            if self.state is DownstreamState.AWAIT_AUTH_DECISION:
                self._offer_security()
            return self._run()
        self._send(security.encode_security_result(self.version, ok=True))
        self.state = DownstreamState.AWAIT_CLIENT_INIT
        return self._run()

    def reject(self, reason: str) -> list[Event]:
        """
        After an L{AuthResponse}: the response is wrong.  Queues
        SecurityResult failed (with C{reason} in 3.8) and fails.  With
        C{hold}: the viewer is refused after the version exchange, as with
        C{refuse} (then C{[]} while the version has not come yet).

        @param reason: told to the viewer in 3.8; must not hold a password.
        @return: C{[HandshakeFailed(reason)]}; C{[]} if already FAILED.
        @raise RuntimeError: if no decision is pending.
        """
        if self.state is DownstreamState.FAILED:
            return []
        self._check_decision_pending()
        if self._undecided:  # held: the refusal of step 1, now or once the version came
            self._undecided = False
            self._refuse = reason
            if self.state is DownstreamState.AWAIT_AUTH_DECISION:
                self._send(security.encode_refusal(self.version, reason))
                self._fail(reason)
            return self._run()
        self._send(security.encode_security_result(self.version, ok=False, reason=reason))
        self._fail(reason)
        return self._run()

    def _check_decision_pending(self) -> None:
        if not self.decision_pending:
            raise RuntimeError(f"no authentication decision pending in {self.state}")

    # -- step 0 ------------------------------------------------------------

    def _on_initial(self) -> bool:
        if self._buffer:
            self._fail("protocol error: viewer sent data before the server greeting")
            return True
        return False

    # -- step 1 ------------------------------------------------------------

    def _on_version(self) -> bool:
        message = self._take(wire.VERSION_LENGTH)
        if message is None:
            return False
        self.version = wire.negotiate_version(wire.parse_version(message))
        if self._refuse is not None:
            self._send(security.encode_refusal(self.version, self._refuse))
            self._fail(self._refuse)
        elif self._undecided:
            self.state = DownstreamState.AWAIT_AUTH_DECISION
        else:
            self._offer_security()
        return True

    def _offer_security(self) -> None:
        if self.version == wire.RFB_3_3:
            self._send(security.encode_security_type_33(self._security_type))
            self._start_security()
        else:
            self._send(security.encode_security_types([self._security_type]))
            self.state = DownstreamState.AWAIT_SECURITY_CHOICE

    # -- step 2 ------------------------------------------------------------

    def _on_security_choice(self) -> bool:
        chosen = self._take_u8()
        if chosen is None:
            return False
        if chosen != self._security_type:
            if self.version == wire.RFB_3_8:
                self._send(
                    security.encode_security_result(
                        self.version, ok=False, reason=_UNSUPPORTED_CHOICE
                    )
                )
            self._fail(f"viewer chose {_UNSUPPORTED_CHOICE} {chosen}")
            return True
        if self._security_type == SecurityType.NONE and self.version == wire.RFB_3_8:
            self._send(security.encode_security_result(self.version, ok=True))
        self._start_security()
        return True

    def _start_security(self) -> None:
        if self._security_type == SecurityType.VNC_AUTH:
            self._send(self._challenge)
            self.state = DownstreamState.AWAIT_AUTH_RESPONSE
        else:
            self.state = DownstreamState.AWAIT_CLIENT_INIT

    # -- step 3 ------------------------------------------------------------

    def _on_auth_response(self) -> bool:
        response = self._take(wire.CHALLENGE_LENGTH)
        if response is None:
            return False
        self.state = DownstreamState.AWAIT_AUTH_DECISION
        self._emit(AuthResponse(self._challenge, response))
        return True

    def _on_auth_decision(self) -> bool:
        return False  # buffer until accept() or reject()

    # -- step 5 ------------------------------------------------------------

    def _on_client_init(self) -> bool:
        flag = self._take_u8()
        if flag is None:
            return False
        assert self.version is not None
        self.state = DownstreamState.DONE
        self._emit(ClientInitReceived(bool(flag), self.version, self._take_leftover()))
        return True
