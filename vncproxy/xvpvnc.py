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

from dataclasses import replace

from vncproxy.admission import (ADDRESS_LOCKED, INSTANCE_LOCKED, WRONG_PASSWORD, XVPVNC,
                                PasswordCredential, Refusal, TokenCredential)
from vncproxy.closecodes import REASONS, CloseCode
from vncproxy.httpconnect import RESPONSES, BadRequest, ConnectRequestParser
from vncproxy.ratelimit import PendingPerAddress
from vncproxy.rfb import AuthResponse, DownstreamHandshake, HandshakeFailed
from vncproxy.vnc import VncSession

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
            self._respond(Refusal(CloseCode.TOKEN_INVALID, 400, f"bad request: {e}"))
            return
        if request is not None:
            self._admit_connect(request)

    def _respond(self, refusal):
        self._refused(refusal, f"CONNECT {refusal.status}")
        self._parser = _Done()  # whatever else arrives is ignored
        self._later(refusal.delay, self._send_refusal, refusal.status)

    def _send_refusal(self, status):
        self.transport.write(RESPONSES[status])
        self._close()

    def _admit_connect(self, request):
        ctx = self.factory.ctx
        if request.token is None and not ctx.limiter.blocked(self._peer):
            self._respond(Refusal(CloseCode.TOKEN_INVALID, 400, "no token"))
            return
        outcome = ctx.admission.admit(self._peer, TokenCredential(request.token), XVPVNC,
                                      self._open_session)
        if isinstance(outcome, Refusal):
            self._respond(outcome)
            return
        grant, session = outcome.grant, outcome.session
        self._log.info("xvpvnc CONNECT from {peer} admitted with token {grant_id} for "
                       "{instance}", peer=self._peer, grant_id=grant.id,
                       instance=grant.instance_uuid)
        self.transport.write(RESPONSES[200])
        self._hand_over(session)
        if request.leftover:
            session.viewer_data(request.leftover)

    def _open_session(self, grant, downstream=None):
        return VncSession(self.factory.ctx, grant, TcpViewer(self), self._peer,
                          downstream=downstream)

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
                    self._refused(Refusal(CloseCode.PROTOCOL_ERROR, 400,
                                          f"native viewer: {event.reason}"))
                self._close()

    def _reject(self, refusal):
        """
        Refuse the native login: counted, audited, and the refusal's text told to the viewer
        (after its delay when rate limiting).
        """
        self._rejected = True
        self._refused(refusal, "native login")
        self._later(refusal.delay,
                    lambda: self._native_events(self._machine.reject(refusal.text)))

    def _authenticate(self, event):
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


class TcpViewer:
    """
    Adapts an L{XvpVncProtocol} to the viewer shape L{VncSession} drives. Raw TCP has no close
    codes: the RFB refusal (when there is one) already told the viewer why.
    """

    listener = "xvpvnc"  # its name in the session inventory

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
        return True  # raw TCP: any byte may go at any time (vncproxy.relay.zerocopy)

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


__all__ = ["ADDRESS_LOCKED", "INSTANCE_LOCKED", "TcpViewer", "WRONG_PASSWORD", "XvpVncFactory",
           "XvpVncProtocol"]
