"""
A console operation (L{ConsoleOperation}) is one interactive serial session
(L{vncproxy.serial.session.SerialSession}) with two channels::

    WAITING   --"0" connects------------> ATTACHED  the session joins the hub (force: the
              (control may come first)              writer before is closed, TAKEN_OVER),
                                                    scrollback then live output in binary
                                                    frames; binary or text frames are typed
    ATTACHED  --control closes----------> ENDED     the user detached (C{ctrl+a q}): "0" is
              --"0" closes--------------> ENDED       closed too, the operation succeeds
              --the session is closed---> ENDED     taken over, idle, too long, instance
                                                    stopped, service stopping: "0" gets the
                                                    close code, control is closed, the
                                                    operation fails with the reason
    WAITING   --ttl passes--------------> ENDED     nobody attached: the operation fails
"""

from enum import Enum

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.logger import Logger

from vncproxy.admission import Listener, Refusal, Refused
from vncproxy.closecodes import CloseCode
from vncproxy.lxd.operations import RequestorMismatch, SecretRejected
from vncproxy.serial.session import SerialSession
from vncproxy.tokens import Grant
from vncproxy.web.websocket import WebSocketViewer

NOT_AUTHORIZED = "not authorized"
DETACHED = "Detaching from console"


class _State(Enum):
    WAITING = "waiting"
    ATTACHED = "attached"
    ENDED = "ended"


class ConsoleOperation:
    """
    Runs one console operation (see the module docstring).

    @param ctx: the L{vncproxy.context.ProxyContext}.
    @param store: the L{vncproxy.lxd.operations.OperationStore}.
    @param operation: the L{vncproxy.lxd.operations.Operation} it runs.
    @param info: the instance's L{vncproxy.hypervisor.DomainInfo}.
    @param force: whether attaching takes the console over from its writer.
    """

    _log = Logger()

    def __init__(self, ctx, store, operation, info, force):
        self._ctx = ctx
        self._store = store
        self.operation = operation
        operation.handler = self
        self.grant = Grant(id=operation.id.split("-")[0], instance_uuid=info.uuid,
                           instance_name=info.name, console_type="serial", force=force,
                           created_at=operation.created_at, expires_at=operation.expires_at,
                           caller=operation.caller)
        self.state = _State.WAITING
        self._channels = {}  # "0" / "control" -> protocol
        self._session = None
        self._deadline = ctx.reactor.callLater(store.ttl, self._expired)

    def open(self, channel, protocol, peer):
        """
        The session of a channel whose secret was redeemed (L{vncproxy.admission}, step 4):
        C{register()} attaches it, or raises L{Refused} (409: the operation ended, the console
        is no longer free).
        """
        if channel == "control":
            return _ControlChannel(self, protocol)
        return _ConsoleChannel(self, protocol, SerialSession(
            self._ctx, self.grant, _LxdViewer(protocol, self), peer))

    def _attached(self, channel, protocol, session=None):
        if self.state is _State.ENDED:
            raise Refused(Refusal(CloseCode.CONSOLE_CLOSED, 409, "the operation has ended"))
        self._channels[channel] = protocol
        if session is not None:
            protocol._session = session
            self._session = session
            self.state = _State.ATTACHED
            self._cancel_deadline()

    def opened(self, channel):
        if channel == "0" and self._session is not None and self.state is _State.ATTACHED:
            self._session.start()

    def channel_closed(self, channel):
        """
        The client closed a channel (or its connection dropped): the user is done.
        """
        self._channels.pop(channel, None)
        if self.state is _State.ENDED:
            return
        session, self._session = self._session, None
        if session is not None:
            session.viewer_lost()
        self._end(None)

    def session_closed(self, code, reason):
        """
        The session was closed from our side (its "0" channel got C{code}, C{reason}).
        """
        self._channels.pop("0", None)
        self._session = None
        self._end(reason)

    def _expired(self):
        self._deadline = None
        if self.state is _State.WAITING:
            self._end("timed out waiting for the console WebSocket")

    def _cancel_deadline(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _end(self, error):
        if self.state is _State.ENDED:
            return
        self.state = _State.ENDED
        self._cancel_deadline()
        for channel, protocol in list(self._channels.items()):
            protocol._operation = None  # we are the ones closing: no echo
            protocol._session = None
            if protocol.state == WebSocketServerProtocol.STATE_OPEN:
                protocol.sendClose(1000, DETACHED if error is None else _close_reason(error))
            elif protocol.transport is not None:
                protocol.transport.loseConnection()
        self._channels.clear()
        self._store.finish(self.operation, error)
        self._log.info("LXD console operation {operation} of {instance} ended: {how}",
                       operation=self.operation.id, instance=self.grant.instance_uuid,
                       how=error or "detached")


def _close_reason(text):
    """
    C{text} cut to fit a close frame (123 bytes of UTF-8).
    """
    return text.encode("utf-8")[:123].decode("utf-8", "ignore")


class _ControlChannel:
    def __init__(self, console, protocol):
        self._console, self._protocol = console, protocol

    def register(self):
        self._console._attached("control", self._protocol)


class _ConsoleChannel:
    """
    The "0" channel's admission: the serial session joins the hub (or refuses, which ends
    the operation: its console is no longer free).
    """

    def __init__(self, console, protocol, session):
        self._console, self._protocol, self.session = console, protocol, session

    def register(self):
        console = self._console
        if console.state is _State.ENDED:
            raise Refused(Refusal(CloseCode.CONSOLE_CLOSED, 409, "the operation has ended"))
        try:
            self.session.register()
        except Refused as e:
            console._end(f"{e.refusal.detail} for instance {console.grant.instance_name}")
            raise
        console._attached("0", self._protocol, self.session)


class OperationSecret:
    """
    The credential of an operation's WebSocket (L{vncproxy.admission}): its secret, and who
    presents it. Redeeming it names the channel and the operation.
    """

    kind = "LXD operation secret"

    def __init__(self, store, op_id, secret, requestor, strict):
        self._store = store
        self._op_id = op_id
        self._secret = secret
        self._requestor = requestor
        self._strict = strict
        self.channel = None
        self.console = None

    def __repr__(self):
        return f"<OperationSecret {self._op_id}>"  # never the secret

    def redeem(self, admission, peer):
        try:
            operation, self.channel = self._store.redeem(self._op_id, self._secret,
                                                         self._requestor, self._strict)
        except SecretRejected as e:
            message = str(e) if isinstance(e, RequestorMismatch) else NOT_AUTHORIZED
            raise Refused(Refusal(CloseCode.TOKEN_INVALID, 403, f"{self.kind}: {e}", message,
                                  delay=admission.ctx.limiter.failed(peer))) from None
        self.console = operation.handler
        return self.console.grant


#: What the LXD WebSocket admits into: an operation's channels, serial consoles.
LXD = Listener("lxd", ("serial",))


class _LxdViewer(WebSocketViewer):
    """
    The "0" channel as the session's viewer: a close from the session ends the operation.
    """

    listener = "lxd"  # its name in the session inventory

    def __init__(self, protocol, operation):
        super().__init__(protocol)
        self._console = operation

    def close(self, code, reason):
        self._protocol._operation = None
        super().close(code, reason)
        self._console.session_closed(code, reason)
