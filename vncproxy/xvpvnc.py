"""
The C{xvpvnc} listener: raw TCP for Java and native VNC viewers.

A connection is one of two kinds, told apart by who speaks first::

    client sends "CONNECT " ... within [xvpvnc] native_wait seconds   -> CONNECT mode
    client silent for native_wait seconds                             -> native mode

CONNECT mode (Nova's xvp viewer): the request (L{vncproxy.httpconnect}) carries a console
token. No token: C{HTTP/1.1 400 Invalid Request}; a bad, used or expired token:
C{HTTP/1.1 401 Not Authorized}; the instance at its session limit: C{HTTP/1.1 409 Conflict};
then the connection closes. Otherwise C{HTTP/1.1 200 OK} CRLF CRLF, and a L{VncSession} runs
RFB with security None, as on the WebSocket listener.

Native mode (TigerVNC, RealVNC, vncdotool...): we greet with C{RFB 003.008} and offer VNC
Authentication. The viewer's response is checked against every live one-time password
(L{TokenStore.match_vnc_response}); the matching grant picks the instance and is consumed.
The downstream machine, waiting for its decision, goes to the L{VncSession}, which accepts it
once QEMU's handshake succeeded (or rejects it with the reason).

Failures are limited per client address with the service's shared limiter (C{[ratelimit]}:
bad tokens on either listener and wrong passwords count alike; refusals are answered later and
later, then refused outright: C{HTTP/1.1 429 Too Many Requests} or an RFB failure). Wrong
passwords are also counted per instance: every instance with a live password counts each wrong
guess, since each guess was tried against it. For an instance at C{[xvpvnc]
max_failures_per_instance}, even the right password is refused, and that password is revoked,
so a guess that hits during the lock-out is worth nothing; its token keeps working on the
WebSocket listener. Refusals are audited and counted; logs name the address, never a password
or token.

Until a session takes over, the connection has C{[vnc] handshake_timeout} seconds and a
bounded buffer (the CONNECT request, or the RFB machine's cap), and each source address may
hold at most C{[xvpvnc] max_pending_per_address} such connections: more are cut at once, so a
slowloris-style client cannot take the service's descriptors.
"""


from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from vncproxy.audit import audit
from vncproxy.closecodes import REASONS, CloseCode
from vncproxy.httpconnect import RESPONSES, BadRequest, ConnectRequestParser
from vncproxy.ratelimit import FailureLimiter, PendingPerAddress
from vncproxy.rfb import AuthResponse, DownstreamHandshake, HandshakeFailed
from vncproxy.sessions import LimitReached
from vncproxy.tokens import TokenRejected
from vncproxy.vnc import VncSession

WRONG_PASSWORD = "authentication failed"
ADDRESS_LOCKED = "too many failed attempts from your address; try again later"
INSTANCE_LOCKED = ("too many failed password attempts for this console; "
                   "request a new console password later")

#: HTTP status of each CONNECT refusal -> the close code it is counted and audited as.
_STATUS_CODES = {400: CloseCode.TOKEN_INVALID, 401: CloseCode.TOKEN_INVALID,
                 409: CloseCode.LIMIT_REACHED, 429: CloseCode.RATE_LIMITED}


def _peer_host(transport):
    peer = transport.getPeer()
    return getattr(peer, "host", None) or str(peer)


class XvpVncProtocol(Protocol):
    """
    One connection to the xvpvnc listener; see the module docstring.
    """

    _log = Logger()

    def __init__(self):
        self._session = None
        self._parser = None
        self._machine = None
        self._native_timer = None
        self._deadline = None
        self._closing = False
        self._rejected = False
        self._pending = False

    # -- connection ------------------------------------------------------------------------------

    def connectionMade(self):
        ctx = self.factory.ctx
        self._peer = _peer_host(self.transport)
        if not self.factory.pending.admit(self._peer):
            # Counted, not audited: a flood of these must not flood the log as well.
            ctx.metrics.refused(REASONS[CloseCode.RATE_LIMITED].replace(" ", "_"))
            self._closing = True
            self.transport.abortConnection()
            return
        self._pending = True
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        self._native_timer = ctx.reactor.callLater(ctx.config.xvpvnc_native_wait,
                                                   self._native_wait_over)
        self._deadline = ctx.reactor.callLater(ctx.config.vnc_handshake_timeout,
                                               self._timed_out)

    def dataReceived(self, data):
        if self._session is not None:
            self._session.viewer_data(data)
        elif self._closing:
            return
        elif self._machine is not None:
            self._native_data(data)
        else:
            self._connect_data(data)

    def connectionLost(self, reason):
        self._cancel_timers()
        if self._session is not None:
            session, self._session = self._session, None
            session.viewer_lost()

    def _cancel_timers(self):
        """
        The handshake is over (a session took over, or the connection ends): stop its timers
        and stop counting the connection against its address.
        """
        for timer in (self._native_timer, self._deadline):
            if timer is not None and timer.active():
                timer.cancel()
        self._native_timer = self._deadline = None
        if self._pending:
            self._pending = False
            self.factory.pending.release(self._peer)

    def _timed_out(self):
        self._deadline = None
        self._refused(CloseCode.PROTOCOL_ERROR, "handshake timed out")
        self._close()

    def _refused(self, code, detail):
        """
        Count and audit a refusal (C{detail} never holds a secret).
        """
        reason = REASONS[code]
        self.factory.ctx.metrics.refused(reason.replace(" ", "_"))
        audit("refusal", console_type="vnc", peer=self._peer, reason=f"{reason}: {detail}")

    def _later(self, delay, action, *args):
        """
        Run C{action} now, or after C{delay} seconds (rate limiting) unless closed meanwhile.
        """
        if delay <= 0:
            action(*args)
            return

        def run():
            if not self._closing:
                action(*args)

        self.factory.ctx.reactor.callLater(delay, run)

    def _close(self):
        self._closing = True
        self._cancel_timers()
        self.transport.loseConnection()

    def _hand_over(self, session):
        """
        The session owns the connection from now on (with its own time-out).
        """
        self._cancel_timers()
        self._session = session
        session.start()

    # -- CONNECT mode ----------------------------------------------------------------------------

    def _connect_data(self, data):
        if self._parser is None:
            self._native_timer.cancel()
            self._native_timer = None
            self._parser = ConnectRequestParser()
        try:
            request = self._parser.receive_data(data)
        except BadRequest as e:
            self._respond(400, f"bad request: {e}")
            return
        if request is not None:
            self._admit_connect(request)

    def _respond(self, status, why, delay=0.0):
        self._refused(_STATUS_CODES[status], f"CONNECT {status}: {why}")
        self._parser = _Done()  # whatever else arrives is ignored
        self._later(delay, self._send_refusal, status)

    def _send_refusal(self, status):
        self.transport.write(RESPONSES[status])
        self._close()

    def _admit_connect(self, request):
        ctx = self.factory.ctx
        if ctx.limiter.blocked(self._peer):
            self._respond(429, "too many failed attempts from this address")
            return
        if request.token is None:
            self._respond(400, "no token")
            return
        try:
            grant = ctx.tokens.consume(request.token)
        except TokenRejected as e:
            self._respond(401, str(e), delay=ctx.limiter.failed(self._peer))
            return
        if grant.console_type != "vnc":
            self._respond(401, f"token {grant.id} is for a {grant.console_type} console")
            return
        session = VncSession(ctx, grant, TcpViewer(self), self._peer)
        try:
            ctx.sessions.admit(grant.instance_uuid, "vnc", session, "xvpvnc")
        except LimitReached as e:
            ctx.tokens.release(grant, resumable=True, session_started_at=grant.session_started_at)
            self._respond(409, str(e))
            return
        self._log.info("xvpvnc CONNECT from {peer} admitted with token {grant_id} for "
                       "{instance}", peer=self._peer, grant_id=grant.id,
                       instance=grant.instance_uuid)
        self.transport.write(RESPONSES[200])
        self._hand_over(session)
        if request.leftover:
            session.viewer_data(request.leftover)

    # -- native mode -----------------------------------------------------------------------------

    def _native_wait_over(self):
        # A reactor that was busy runs its due timers before it reads the sockets: a CONNECT
        # that arrived in time may still be unread. Decide after one more read.
        self._native_timer = self.factory.ctx.reactor.callLater(0, self._go_native)

    def _go_native(self):
        self._native_timer = None
        self._machine = DownstreamHandshake(auth="vnc")
        self._machine.initiate()
        self.transport.write(self._machine.data_to_send())

    def _native_data(self, data):
        self._native_events(self._machine.receive_data(data))

    def _native_events(self, events):
        out = self._machine.data_to_send()
        if out:
            self.transport.write(out)
        for event in events:
            if isinstance(event, AuthResponse):
                self._authenticate(event)
            elif isinstance(event, HandshakeFailed):
                if not self._rejected:
                    self._refused(CloseCode.PROTOCOL_ERROR, f"native viewer: {event.reason}")
                self._close()

    def _reject(self, code, detail, answer, delay=0.0):
        """
        Refuse the native login: counted, audited, and C{answer} told to the viewer (after
        C{delay} seconds when rate limiting).
        """
        self._rejected = True
        self._refused(code, f"native login: {detail}")
        self._later(delay, lambda: self._native_events(self._machine.reject(answer)))

    def _authenticate(self, event):
        ctx, instances = self.factory.ctx, self.factory.instance_failures
        if ctx.limiter.blocked(self._peer):
            self._reject(CloseCode.RATE_LIMITED, "too many failed attempts from this address",
                         ADDRESS_LOCKED)
            return
        grant = ctx.tokens.match_vnc_response(event.challenge, event.response)
        if grant is None:
            for instance in ctx.tokens.password_instances():
                instances.failed(instance)
            self._reject(CloseCode.TOKEN_INVALID, "wrong password", WRONG_PASSWORD,
                         delay=ctx.limiter.failed(self._peer))
            return
        if instances.blocked(grant.instance_uuid):
            ctx.tokens.revoke_password(grant)
            self._reject(CloseCode.RATE_LIMITED,
                         f"too many wrong passwords for {grant.instance_uuid}; the password of "
                         f"grant {grant.id} is revoked", INSTANCE_LOCKED)
            return
        try:
            grant = ctx.tokens.consume_grant(grant)
        except TokenRejected:
            self._reject(CloseCode.TOKEN_INVALID, "password expired meanwhile", WRONG_PASSWORD)
            return
        session = VncSession(ctx, grant, TcpViewer(self), self._peer, downstream=self._machine)
        try:
            ctx.sessions.admit(grant.instance_uuid, "vnc", session, "xvpvnc")
        except LimitReached as e:
            self._reject(CloseCode.LIMIT_REACHED, str(e), f"limit reached: {e}")
            return
        self._log.info("native vnc login from {peer} admitted with the password of grant "
                       "{grant_id} for {instance}", peer=self._peer, grant_id=grant.id,
                       instance=grant.instance_uuid)
        self._hand_over(session)


class TcpViewer:
    """
    Adapts an L{XvpVncProtocol} to the viewer shape L{VncSession} drives. Raw TCP has no close
    codes: the RFB refusal (when there is one) already told the viewer why.
    """

    def __init__(self, protocol):
        self._protocol = protocol

    @property
    def network_transport(self):
        return self._protocol.transport

    def send(self, data):
        transport = self._protocol.transport
        if data and transport is not None and transport.connected:
            transport.write(data)

    def splice_ready(self):
        return True  # raw TCP: any byte may go at any time (vncproxy.zerocopy)

    def splice_header(self, n):
        return b""

    def close(self, code, reason):
        protocol = self._protocol
        protocol._session = None  # we are the ones closing: no viewer_lost() echo
        protocol._closing = True
        if protocol.transport is not None:
            protocol.transport.loseConnection()

    def pause_reading(self):
        self._protocol.transport.pauseProducing()

    def resume_reading(self):
        self._protocol.transport.resumeProducing()


class _Done:
    """
    Stands in for the request parser once the request was answered: ignores the rest.
    """

    def receive_data(self, data):
        return None


class XvpVncFactory(Factory):
    """
    @param ctx: the L{vncproxy.context.ProxyContext}.
    """

    protocol = XvpVncProtocol

    def __init__(self, ctx):
        self.ctx = ctx
        self.pending = PendingPerAddress(ctx.config.xvpvnc_max_pending_per_address)
        limit = ctx.config.xvpvnc_max_failures_per_instance
        # Wrong passwords per instance with a live password: no slowing down, only refusal.
        self.instance_failures = FailureLimiter(ctx.reactor, ctx.config.ratelimit_window,
                                                slow_after=limit, refuse_after=limit)


__all__ = ["TcpViewer", "XvpVncFactory", "XvpVncProtocol"]
