"""
One VNC console session: a viewer (WebSocket or raw TCP) joined to the domain's VNC server.

The order of work, once the viewer was admitted::

    1. Pause the viewer; greet a token-admitted viewer at once (L{DownstreamHandshake} with
       C{hold}): its answer travels while we reach QEMU, and is read once QEMU accepted us or
       the console was found out of reach. Ask the hypervisor where the VNC server is and its
       password.
    2. Connect to it (connect timeout) and run L{UpstreamHandshake} (RFB client, our side
       authenticates with libvirt's password): the viewer never sees the credentials. When the
       server requires VeNCrypt, the machine emits L{StartTLS} after QEMU accepted the subtype;
       we start TLS on the transport (certificate checked against the CA and the expected
       name, see L{vncproxy.vnctls}) and call C{tls_started()}; the rest of the handshake runs
       inside TLS. A TLS failure ends the attempt with a clear reason: there is no fall back.
    3. On SecurityAccepted, the viewer's machine (awaiting its decision) accepts:
       - token-admitted viewers (WebSocket, xvpvnc CONNECT): security None follows (the token
         already authorized them); a console that cannot be reached is refused in its place;
       - native viewers on the xvpvnc port arrive with a downstream machine that already
         holds their VNC Authentication response (it chose the session), paused until now, so
         that a console that cannot be reached is reported as an authentication failure with
         a reason rather than as a dropped connection.
    4. With SecurityAccepted, send QEMU ClientInit with shared=1 (whatever the viewer will
       ask: an exclusive viewer must not kick the other sessions off), and read and check
       QEMU's ServerInit while the viewer's handshake runs; once both are done (the viewer's
       ClientInit and the checked ServerInit), relay bytes unchanged both ways
       (L{vncproxy.vncrelay.VncRelay}: flow control, view-only input, the fast paths).
    5. Any failure before the relay starts is reported to the viewer in RFB terms (a security
       failure with a reason) and then with a close code; a stalled handshake times out. Bytes
       either side sends before the relay are bounded.

The viewer is an L{vncproxy.interfaces.IViewer} (a WebSocket or a raw TCP connection).
"""

import enum

from twisted.internet import defer
from twisted.logger import Logger

from vncproxy.admission import Refusal, Refused
from vncproxy.audit import audit
from vncproxy.closecodes import CloseCode, reason_for
from vncproxy.hypervisor import HypervisorError, NoSuchInstance
from vncproxy.rfb import (
    ClientInitReceived,
    DownstreamHandshake,
    DownstreamState,
    HandshakeFailed,
    ServerInitReader,
    ServerInitReceived,
)
from vncproxy.rfb.wire import client_init
from vncproxy.sessions import LimitReached, Listed, SessionTimer
from vncproxy.vncrelay import VncRelay
from vncproxy.vncupstream import UpstreamConnection

# Bytes QEMU may send after its ServerInit before the viewer's ClientInit (it should send none).
MAX_HELD_BYTES = 64 * 1024
# Seconds to wait for libvirt's STOPPED event after QEMU's VNC connection dropped.
STOP_EVENT_WAIT = 3.0


class State(enum.Enum):
    """
    A session's states; L{VncSession._end} is the only way to CLOSED::

        CONNECTING --QEMU's handshake done--> DOWNSTREAM --viewer's ClientInit--> SERVER_INIT
            |                     (our ClientInit sent)   |                         |
            | (a token viewer is greeted)         |            QEMU's ServerInit checked
            |                                     |     (if it was already: at once)  v
            +--cannot reach the console----> REFUSING (the viewer is told why)  RELAYING
            +-------------------+-----------------+---------------------------------+--> CLOSED
    """

    CONNECTING = "looking the console up, connecting, QEMU's handshake"
    DOWNSTREAM = "the viewer's handshake with us; QEMU's ServerInit is read and checked meanwhile"
    SERVER_INIT = "the viewer's ClientInit came: waiting for QEMU's checked ServerInit"
    RELAYING = "bytes relayed both ways"
    REFUSING = "the viewer is being told in RFB terms why it cannot connect"
    CLOSED = "ended"


class _Gone:
    active = False


_GONE = _Gone()


class VncSession(Listed):
    """
    @param ctx: the L{vncproxy.context.ProxyContext}.
    @param grant: the L{vncproxy.tokens.Grant} that admitted the viewer.
    @param viewer: the viewer adapter (see the module docstring).
    @param peer: the viewer's address, for logs.
    @param downstream: for a native viewer, its L{DownstreamHandshake} waiting for the
        authentication decision (state C{AWAIT_AUTH_DECISION}); C{None} otherwise.
    """

    _log = Logger()

    def __init__(self, ctx, grant, viewer, peer, downstream=None):
        if downstream is not None and downstream.state is not DownstreamState.AWAIT_AUTH_DECISION:
            raise ValueError("a native viewer's handshake must await its auth decision")
        self._ctx = ctx
        self._grant = grant
        self._viewer = viewer
        self._peer = peer
        self._reactor = ctx.reactor
        self._upstream = UpstreamConnection(ctx, grant, self)
        self._relay = None  # the VncRelay from our ClientInit on
        self._state = State.CONNECTING
        self._downstream = downstream
        self._server_init = None  # the ServerInitReader from our ClientInit on
        # QEMU's checked ServerInit and whatever followed it, until the relay starts (None:
        # not checked yet)
        self._from_qemu = None
        self._refusal = None  # (code, detail) while REFUSING
        self._timeout = None
        self._started_at = None
        self._cancel_on_end = None
        self._timer = SessionTimer(self._reactor, ctx.config.idle_timeout,
                                   ctx.config.max_session, lambda code: self._end(code, None))

    @property
    def state(self):
        return self._state

    # what the inventory, the metrics and the audit read (nothing moved before the relay)
    bytes_to_viewer = property(lambda self: self._relay.bytes_to_viewer if self._relay else 0)
    bytes_from_viewer = property(
        lambda self: self._relay.bytes_from_viewer if self._relay else 0)
    bytes_spliced = property(lambda self: self._relay.bytes_spliced if self._relay else 0)

    # -- lifecycle -------------------------------------------------------------------------------

    def register(self):
        """
        Count against the instance's VNC session limit (L{vncproxy.admission}, step 4).

        @raise Refused: 409 when the instance is at its limit.
        """
        try:
            self._ctx.sessions.admit(self._grant.instance_uuid, "vnc", self,
                                     getattr(self._viewer, "listener", None))
        except LimitReached as e:
            raise Refused(Refusal(CloseCode.LIMIT_REACHED, 409, str(e),
                                  f"limit reached: {e}")) from None

    def start(self):
        self._started_at = self._reactor.seconds()
        self._timer.start(self._grant.session_started_at)
        self._viewer.pause_reading()
        self._timeout = self._reactor.callLater(
            self._ctx.config.vnc_handshake_timeout, self._handshake_timed_out)
        audit("connect", console_type="vnc", instance=self._grant.instance_uuid,
              peer=self._peer, grant_id=self._grant.id, caller=self._grant.caller,
              resumed=self._grant.session_started_at is not None)
        if self._downstream is None:
            self._downstream = DownstreamHandshake(auth="none", hold=True)
            self._downstream.initiate()
            self._viewer.send(self._downstream.data_to_send())
        self._upstream.connect()

    def close(self, code, detail=None):
        """
        End the session from our side (instance stopped, service stopping, ...). A native
        viewer still waiting for its SecurityResult is told why in RFB terms first.
        """
        machine = self._downstream
        if (self._state in (State.CONNECTING, State.DOWNSTREAM) and machine is not None
                and machine.state is DownstreamState.AWAIT_AUTH_DECISION):
            self._state, self._refusal = State.REFUSING, (code, detail)
            self._upstream.stop()
            self._downstream_events(machine.reject(reason_for(code, detail)))
        else:
            self._end(code, detail)

    # -- upstream (QEMU): the UpstreamConnection's reports -------------------------------------

    def upstream_ready(self):
        self._state = State.DOWNSTREAM
        # QEMU's ServerInit is read and checked (a hostile server's 4 GiB desktop name never
        # reaches a viewer) while the viewer's handshake runs.
        self._upstream.transport.write(client_init(True))
        self._server_init = ServerInitReader()
        self._server_init_events(
            self._server_init.receive_data(self._upstream.relay(self._qemu_data)))
        if self._state is State.DOWNSTREAM:
            # A token viewer goes on to security None; a native viewer, whose password chose
            # this session, is told so only now.
            self._downstream_events(self._downstream.accept())
            self._viewer.resume_reading()

    def upstream_refused(self, code, detail):
        self._refuse(code, detail)

    def upstream_failed(self, code, detail):
        self._end(code, detail)

    def upstream_lost(self):
        if self._state in (State.RELAYING, State.SERVER_INIT):
            self._upstream_gone()
        elif self._state is State.DOWNSTREAM:
            self._refuse(CloseCode.CONSOLE_UNAVAILABLE, "VNC server closed the connection")

    def _qemu_data(self, data):
        """QEMU's bytes once our ClientInit went (the UpstreamConnection's sink)."""
        if self._state is State.RELAYING:
            self._relay.to_viewer(data)
        elif self._state not in (State.DOWNSTREAM, State.SERVER_INIT):
            return
        elif self._from_qemu is None:
            self._server_init_events(self._server_init.receive_data(data))
        else:
            self._from_qemu += data
            if len(self._from_qemu) > MAX_HELD_BYTES:
                self._end(CloseCode.CONSOLE_UNAVAILABLE, "VNC server sent unexpected data")

    def _upstream_gone(self):
        """
        QEMU's VNC connection ended mid-session. When the VM was powered off, QEMU's socket
        closes before libvirt reports the domain stopped (about a second later): ask libvirt,
        and give the lifecycle event a moment to arrive, so the viewer learns "instance stopped"
        rather than a bare "console closed".
        """
        self._viewer.pause_reading()
        fallback = self._reactor.callLater(
            STOP_EVENT_WAIT, self._end, CloseCode.CONSOLE_CLOSED, "VNC server closed the connection")

        self._cancel_on_end = fallback

        def check(info):
            if not info.active and fallback.active():
                fallback.cancel()
                self._end(CloseCode.INSTANCE_STOPPED, None)

        def lookup_failed(failure):
            if failure.check(NoSuchInstance):
                check(_GONE)
            elif not failure.check(HypervisorError):
                self._log.failure("vnc session {grant_id}: checking the instance failed",
                                  failure, grant_id=self._grant.id)

        d = defer.maybeDeferred(self._ctx.hypervisor.describe, self._grant.instance_uuid)
        d.addCallback(check)
        d.addErrback(lookup_failed)

    # -- downstream (viewer) ---------------------------------------------------------------------

    def _refuse(self, code, detail):
        """
        Tell the viewer in RFB terms why it cannot connect, then close with C{code}.
        """
        if self._state in (State.REFUSING, State.CLOSED):
            return
        self._state, self._refusal = State.REFUSING, (code, detail)
        self._log.info("vnc session {grant_id} refused: {detail}",
                       grant_id=self._grant.id, detail=detail)
        self._upstream.stop()
        machine = self._downstream
        if machine.decision_pending:
            self._downstream_events(machine.reject(detail))
            self._viewer.resume_reading()  # (a token viewer's version is read, then told why)
        else:
            # The viewer is mid-handshake with us: no clean RFB way to refuse now.
            self._end(code, detail)

    def viewer_data(self, data):
        """
        Bytes from the viewer.
        """
        if self._state is State.CLOSED:
            return
        if self._state in (State.RELAYING, State.SERVER_INIT):
            self._timer.activity()
            self._relay.from_viewer(data)  # (QEMU has our ClientInit)
            return
        self._downstream_events(self._downstream.receive_data(data))

    def _downstream_events(self, events):
        out = self._downstream.data_to_send()
        if out:
            self._viewer.send(out)
        for event in events:
            if isinstance(event, ClientInitReceived):
                self._start_relay(event.leftover)
            elif isinstance(event, HandshakeFailed):
                if self._state is State.REFUSING:
                    self._end(*self._refusal)
                else:
                    self._end(CloseCode.PROTOCOL_ERROR, event.reason)

    def viewer_lost(self, resumable=False):
        """
        The viewer went away: it closed, or (C{resumable}) its connection dropped without a
        close, in which case the token may reopen the console within the reconnect grace.
        """
        self._end(None, "viewer dropped" if resumable else "viewer closed",
                  resumable=resumable)

    # -- relay -----------------------------------------------------------------------------------

    def _start_relay(self, leftover):
        qemu = self._upstream.transport
        if qemu is None:
            self._end(CloseCode.CONSOLE_CLOSED, "VNC server closed the connection")
            return
        # A view-only viewer's input is dropped, and a message that cannot be read ends the
        # session (4011).
        self._relay = VncRelay(self._ctx.fast_paths, qemu, self._viewer, self._grant.read_only,
                               self._timer.activity,
                               lambda detail: self._end(CloseCode.PROTOCOL_ERROR, detail))
        self._state = State.SERVER_INIT
        if self._relay.from_viewer(leftover) and self._from_qemu is not None:
            self._relaying()

    def _server_init_events(self, events):
        for event in events:
            if isinstance(event, ServerInitReceived):
                self._from_qemu = event.message + event.leftover
                if self._state is State.SERVER_INIT:
                    self._relaying()
            elif isinstance(event, HandshakeFailed):
                reason = f"bad ServerInit from the VNC server: {event.reason}"
                self._log.warn("vnc session {grant_id}: {reason}", grant_id=self._grant.id,
                               reason=reason)
                self._refuse(CloseCode.CONSOLE_UNAVAILABLE, reason)  # (in RFB terms if it can)

    def _relaying(self):
        self._cancel_timeout()
        self._state = State.RELAYING
        pending, self._from_qemu = self._from_qemu, b""
        # (no log line: the audit events "connect" and "close", with its byte counts, say it)
        self._relay.start(pending)

    # -- ending ----------------------------------------------------------------------------------

    def _handshake_timed_out(self):
        self._timeout = None
        if self._state is State.REFUSING:
            self._end(*self._refusal)  # the viewer did not even take the refusal in time
        elif self._state is State.CONNECTING:
            self._refuse(CloseCode.CONSOLE_UNAVAILABLE, "timed out connecting to the VNC server")
            if self._state is not State.CLOSED:  # give the viewer as long again to read why
                self._timeout = self._reactor.callLater(
                    self._ctx.config.vnc_handshake_timeout, self._handshake_timed_out)
        else:
            self._end(CloseCode.PROTOCOL_ERROR, "handshake timed out")

    def _cancel_timeout(self):
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _end(self, code, detail, resumable=False):
        if self._state is State.CLOSED:
            return
        relaying, self._state = self._state is State.RELAYING, State.CLOSED
        self._cancel_timeout()
        self._timer.stop()
        if self._cancel_on_end is not None and self._cancel_on_end.active():
            self._cancel_on_end.cancel()
        if self._relay is not None:
            self._relay.stop()
        self._upstream.stop()
        reason = detail
        if code is not None:
            reason = reason_for(code, detail)
            self._viewer.close(code, reason)
        self._ctx.sessions.release(self._grant.instance_uuid, "vnc", self)
        self._ctx.tokens.release(self._grant, resumable and relaying,
                                 self._timer.started_at)
        self._ctx.metrics.session_closed("vnc", self.bytes_to_viewer, self.bytes_from_viewer,
                                         self.bytes_spliced)
        now = self._reactor.seconds()
        audit("close", console_type="vnc", instance=self._grant.instance_uuid, peer=self._peer,
              grant_id=self._grant.id, caller=self._grant.caller,
              duration=now - (self._started_at or now), reason=reason,
              code=int(code) if code is not None else None,
              bytes_to_viewer=self.bytes_to_viewer, bytes_from_viewer=self.bytes_from_viewer,
              mode="read-only" if self._grant.read_only else "interactive",
              input_dropped=self._relay.input_dropped if self._relay is not None else 0)
