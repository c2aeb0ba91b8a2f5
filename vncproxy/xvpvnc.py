"""
The raw-TCP VNC listeners: C{xvpvnc} (Java xvp viewer and native viewers) and C{vnc} (native
viewers only).

On the C{vnc} listener we greet at once (C{RFB 003.008}, VNC Authentication), as any VNC
server does. On the C{xvpvnc} listener a connection is one of two kinds, told apart without a
race::

    client sends "CONNECT "...                       -> CONNECT mode (Nova's xvp viewer)
    client sends "RFB " (before our greeting)        -> native: greet now. GTK-VNC (remote-
                                                        viewer, virt-manager, Boxes) sends it
                                                        when no greeting came 1.75-2.75 s in
    client silent for [xvpvnc] native_wait seconds   -> native: greet (TigerVNC, RealVNC...)
    anything else                                    -> HTTP 400, counted as a protocol error

CONNECT mode: the request (L{vncproxy.httpconnect}) carries a console token. No token:
C{HTTP/1.1 400 Invalid Request}; a bad, used or expired token: C{401 Not Authorized}; the
instance at its session limit: C{409 Conflict}; the address over its failure limit: C{429};
then the connection closes. Otherwise C{HTTP/1.1 200 OK} CRLF CRLF, and a L{VncSession} runs
RFB with security None, as on the WebSocket listener.

Native mode: the viewer's VNC Authentication response is checked against every live one-time
password (L{vncproxy.admission.PasswordCredential}); the matching grant picks the instance and
is consumed. The downstream machine, waiting for its decision, goes to the L{VncSession}, which
accepts it once QEMU's handshake succeeded (or rejects it with the reason).

Password checks wait their turn in the service's L{vncproxy.ratelimit.GuessBudget} (C{[xvpvnc]
password_checks_per_second}, round-robin by address), and wrong passwords count against the
address in the shared failure limiter (C{[ratelimit]}, with bad tokens). Nothing else: no
address can lock others out, and no password is revoked for someone else's guesses
(docs/security.md states the odds). Garbage never counts as a bad token or a wrong password.

Until a session takes over, the connection has C{[vnc] handshake_timeout} seconds and a bounded
buffer, and each source address may hold at most C{[xvpvnc] max_pending_per_address} such
connections on each listener: more are cut at once.
"""

import enum
from dataclasses import replace

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from vncproxy import relay
from vncproxy.admission import XVPVNC, PasswordCredential, Refusal
from vncproxy.clientaddr import peer_host
from vncproxy.closecodes import REASONS, CloseCode
from vncproxy.grants import credential
from vncproxy.httpconnect import RESPONSES, BadRequest, ConnectRequestParser
from vncproxy.interfaces import IViewer
from vncproxy.nodelay import no_delay
from vncproxy.ratelimit import PendingPerAddress
from vncproxy.rfb import AuthResponse, DownstreamHandshake, DownstreamState, HandshakeFailed
from vncproxy.vnc import VncSession

_RFB = b"RFB "


class State(enum.Enum):
    WAITING = "nothing received yet (xvpvnc: CONNECT, RFB or silence decides)"
    CONNECT = "reading a CONNECT request"
    NATIVE = "RFB handshake with a native viewer, up to its password"
    CHECKING = "its password waits for the guess budget"
    ANSWERING = "a refusal is being answered; input is ignored"
    SESSION = "a VncSession owns the connection"
    CLOSED = "closed"


class XvpVncProtocol(Protocol):
    """
    One connection to a raw-TCP VNC listener; see the module docstring.
    """

    _log = Logger()

    def __init__(self):
        self.state = State.WAITING
        self._session = None
        self._parser = None
        self._machine = None
        self._early = b""  # bytes before the greeting (xvpvnc: CONNECT/RFB detection)
        self._held = b""  # the start of the viewer's version, until it is settled
        self._native_timer = None
        self._deadline = None
        self._check = None
        self._pending = False

    # -- connection ------------------------------------------------------------------------------

    def connectionMade(self):
        ctx = self.factory.ctx
        self._peer = peer_host(self.transport.getPeer())
        if not self.factory.pending.admit(self._peer, self.transport.abortConnection):
            # Counted, not audited: a flood of these must not flood the log as well.
            ctx.metrics.refused(REASONS[CloseCode.RATE_LIMITED].replace(" ", "_"))
            self.state = State.CLOSED
            self.transport.abortConnection()
            return
        self._pending = True
        no_delay(self.transport)
        relay.write_through(ctx.fast_paths, self.transport)
        self._deadline = ctx.reactor.callLater(ctx.config.vnc_handshake_timeout,
                                               self._timed_out)
        if self.factory.greet_at_once:
            self._greet()
        else:
            self._native_timer = ctx.reactor.callLater(ctx.config.xvpvnc_native_wait,
                                                       self._native_wait_over)

    def dataReceived(self, data):
        state = self.state
        if state is State.SESSION:
            self._session.viewer_data(data)
        elif state is State.WAITING:
            self._first_bytes(data)
        elif state is State.CONNECT:
            self._connect_data(data)
        elif state in (State.NATIVE, State.CHECKING):
            self._native_data(data)
        # ANSWERING, CLOSED: ignored

    def connectionLost(self, reason):
        self._handshake_over()
        self.state, session, self._session = State.CLOSED, self._session, None
        if session is not None:
            session.viewer_lost()

    def session_closed(self):
        """
        The session closes the connection itself (L{TcpViewer.close}): no viewer_lost() echo.
        """
        self._session = None
        self.state = State.CLOSED
        if self.transport is not None:
            self.transport.loseConnection()

    def _handshake_over(self):
        """
        Stop the handshake's timers and queued check, and stop counting the connection
        against its address.
        """
        for timer in (self._native_timer, self._deadline):
            if timer is not None and timer.active():
                timer.cancel()
        self._native_timer = self._deadline = None
        if self._check is not None:
            self._check.cancel()
            self._check = None
        if self._pending:
            self._pending = False
            self.factory.pending.release(self._peer, self.transport.abortConnection)

    def _timed_out(self):
        self._deadline = None
        self._refused(Refusal(CloseCode.PROTOCOL_ERROR, 408, "handshake timed out"))
        self._close()

    def _refused(self, refusal, where=""):
        """
        Count and audit a refusal (its detail never holds a secret).
        """
        if where:
            refusal = replace(refusal, detail=f"{where}: {refusal.detail}")
        self.factory.ctx.admission.record(self._peer, refusal, console_type="vnc")

    def _later(self, delay, action, *args):
        """
        Run C{action} now, or after C{delay} seconds (rate limiting) unless closed meanwhile.
        """
        if delay <= 0:
            action(*args)
            return

        def run():
            if self.state is not State.CLOSED:
                action(*args)

        self.factory.ctx.reactor.callLater(delay, run)

    def _close(self):
        self._handshake_over()
        self.state = State.CLOSED
        self.transport.loseConnection()

    def _hand_over(self, session):
        """
        The session owns the connection from now on (with its own time-out).
        """
        self._handshake_over()
        self.state, self._session = State.SESSION, session
        session.start()

    def _open_session(self, grant, downstream=None):
        return VncSession(self.factory.ctx, grant, TcpViewer(self), self._peer,
                          downstream=downstream)

    # -- telling CONNECT from native viewers (xvpvnc) --------------------------------------------

    def _first_bytes(self, data):
        self._early += data
        head = self._early[:len(_RFB)]
        if _RFB.startswith(head) and len(head) < len(_RFB):
            return  # "R", "RF", "RFB": wait for the fourth byte
        if head == _RFB:
            self._log.info("xvpvnc: {peer} sent RFB first: a native viewer, greeted now",
                           peer=self._peer)
            self._greet()
            return
        self.state = State.CONNECT
        self._parser = ConnectRequestParser()
        early, self._early = self._early, b""
        self._stop_native_timer()
        self._connect_data(early)

    def _stop_native_timer(self):
        if self._native_timer is not None and self._native_timer.active():
            self._native_timer.cancel()
        self._native_timer = None

    def _native_wait_over(self):
        # A reactor that was busy runs its due timers before it reads the sockets: a CONNECT
        # that arrived in time may still be unread. Decide after one more read.
        self._native_timer = self.factory.ctx.reactor.callLater(0, self._silence_decides)

    def _silence_decides(self):
        self._native_timer = None
        if self.state is State.WAITING:
            self._log.info("xvpvnc: {peer} silent for native_wait: a native viewer, greeted now",
                           peer=self._peer)
            self._greet()

    # -- CONNECT mode ----------------------------------------------------------------------------

    def _connect_data(self, data):
        try:
            request = self._parser.receive_data(data)
        except BadRequest as e:
            self._respond(Refusal(CloseCode.PROTOCOL_ERROR, 400, f"bad request: {e}"))
            return
        if request is not None:
            self._admit_connect(request)

    def _respond(self, refusal):
        self._refused(refusal, f"CONNECT {refusal.status}")
        self.state = State.ANSWERING
        self._later(refusal.delay, self._send_refusal, refusal.status)

    def _send_refusal(self, status):
        self.transport.write(RESPONSES[status])
        self._close()

    def _admit_connect(self, request):
        ctx = self.factory.ctx
        if request.token is None and not ctx.limiter.blocked(self._peer):
            self._respond(Refusal(CloseCode.TOKEN_INVALID, 400, "no token"))
            return
        outcome = ctx.admission.admit(self._peer, credential(ctx, request.token), XVPVNC,
                                      self._open_session)
        if isinstance(outcome, Refusal):
            self._respond(outcome)
            return
        # (no log line of its own: the session's audit "connect" event names the peer, the
        # grant and the instance, as for a WebSocket viewer)
        session = outcome.session
        self.transport.write(RESPONSES[200])
        self._hand_over(session)
        if request.leftover:
            session.viewer_data(request.leftover)

    # -- native mode -----------------------------------------------------------------------------

    def _greet(self):
        self._stop_native_timer()
        self.state = State.NATIVE
        self._machine = DownstreamHandshake(auth="vnc")
        self._machine.initiate()
        self.transport.write(self._machine.data_to_send())
        early, self._early = self._early, b""
        if early:
            self._native_data(early)

    def _native_data(self, data):
        if self._held is not None and self._machine.state is DownstreamState.AWAIT_VERSION:
            data = self._version_bytes(data)
            if not data:
                return
        self._native_events(self._machine.receive_data(data))

    def _version_bytes(self, data):
        """
        A viewer that sent C{RFB } before our greeting either goes on with the rest of its
        version (C{003.008\\n}) or sends its whole version again: the first C{RFB } is then
        dropped. The byte after it decides (a version's digits never start with C{R}).
        """
        held = self._held + data
        if len(held) <= len(_RFB) and _RFB.startswith(held):
            self._held = held
            return b""
        self._held = None
        return held[len(_RFB):] if held.startswith(_RFB + b"R") else held

    def _native_events(self, events):
        out = self._machine.data_to_send()
        if out:
            self.transport.write(out)
        for event in events:
            if isinstance(event, AuthResponse):
                self._queue_check(event)
            elif isinstance(event, HandshakeFailed):
                if self.state is not State.ANSWERING:
                    self._refused(Refusal(CloseCode.PROTOCOL_ERROR, 400,
                                          f"native viewer: {event.reason}"))
                self._close()

    def _queue_check(self, event):
        self.state = State.CHECKING
        self._check = self.factory.ctx.guesses.submit(
            self._peer, lambda: self._authenticate(event))

    def _authenticate(self, event):
        self._check = None
        ctx = self.factory.ctx
        outcome = ctx.admission.admit(
            self._peer, PasswordCredential(event.challenge, event.response), XVPVNC,
            lambda grant: self._open_session(grant, downstream=self._machine))
        if isinstance(outcome, Refusal):
            self._reject(outcome)
            return
        grant = outcome.grant
        self._log.info("native vnc login from {peer} admitted with the password of grant "
                       "{grant_id} for {instance}", peer=self._peer, grant_id=grant.id,
                       instance=grant.instance_uuid)
        self._hand_over(outcome.session)

    def _reject(self, refusal):
        """
        Refuse the native login: counted, audited, and the refusal's text told to the viewer
        (after its delay when rate limiting).
        """
        self.state = State.ANSWERING
        self._refused(refusal, "native login")
        self._later(refusal.delay,
                    lambda: self._native_events(self._machine.reject(refusal.text)))


@implementer(IViewer)
class TcpViewer:
    """
    An L{XvpVncProtocol} as the viewer that a L{VncSession} drives. Raw TCP has no close
    codes: the RFB refusal (when there is one) already told the viewer why.
    """

    def __init__(self, protocol):
        self._protocol = protocol
        # its name in the session inventory: the listener it came in on
        self.listener = "vnc" if protocol.factory.greet_at_once else "xvpvnc"

    @property
    def network_transport(self):
        return self._protocol.transport

    def send(self, data):
        transport = self._protocol.transport
        if data and transport is not None and transport.connected:
            transport.write(data)

    def splice_ready(self):
        return True  # raw TCP: any byte may go at any time (vncproxy.relay.zerocopy)

    def splice_header(self, n):
        return b""

    def close(self, code, reason):
        self._protocol.session_closed()

    def pause_reading(self):
        self._protocol.transport.pauseProducing()

    def resume_reading(self):
        self._protocol.transport.resumeProducing()


class XvpVncFactory(Factory):
    """
    @param ctx: the L{vncproxy.context.ProxyContext}.
    @param greet_at_once: the C{vnc} listener (native viewers only); else the C{xvpvnc} one.
    """

    protocol = XvpVncProtocol

    def __init__(self, ctx, greet_at_once=False):
        self.ctx = ctx
        self.greet_at_once = greet_at_once
        self.pending = PendingPerAddress(ctx.config.xvpvnc_max_pending_per_address,
                                         ctx.config.xvpvnc_max_pending)


__all__ = ["State", "TcpViewer", "XvpVncFactory", "XvpVncProtocol"]
