"""
The LXD WebSockets: an operation's channels (C{/1.0/operations/ID/websocket?secret=S}) and
the event stream (C{/1.0/events}).

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

The control channel takes JSON commands (C{window-resize}: a serial line has no size, so it
is acknowledged by silence; unknown commands are ignored, as LXD does); anything that is not a
JSON object closes it (1007); one over 32 KiB too (1009).

A channel's secret is a credential of the one admission path (L{vncproxy.admission}:
L{OperationSecret}, the L{LXD} listener): the address's failure limit, then the secret (403,
counted against the address like a bad token; 403 "Requestor mismatch" when someone else
presents it, see L{vncproxy.lxd.operations.OperationStore.redeem}), then the channel's
registration (the console's: 409 when it is no longer free). Refusals are LXD error envelopes.
"""

import json
from enum import Enum

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import task
from twisted.logger import Logger
from twisted.web import http

from vncproxy.admission import Listener, Refusal, Refused
from vncproxy.closecodes import CloseCode
from vncproxy.lxd import envelope
from vncproxy.lxd.operations import RequestorMismatch, SecretRejected, event
from vncproxy.serial.session import SerialSession
from vncproxy.tokens import Grant
from vncproxy.web.errors import ApiError, error_document
from vncproxy.web.websocket import CLOSE_HANDSHAKE_TIMEOUT, MAX_MESSAGE, _WebSocketViewer
from vncproxy.web.websocket import _source_address

NOT_AUTHORIZED = "not authorized"
DETACHED = "Detaching from console"
#: Largest control message (LXD reads at most this much of one).
MAX_CONTROL = 32 * 1024


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


class _LxdViewer(_WebSocketViewer):
    """
    The "0" channel as the session's viewer: a close from the session ends the operation.
    """

    def __init__(self, protocol, operation):
        super().__init__(protocol)
        self._console = operation

    def close(self, code, reason):
        self._protocol._operation = None
        super().close(code, reason)
        self._console.session_closed(code, reason)


class LxdChannelProtocol(WebSocketServerProtocol):
    """
    One LXD WebSocket: an operation channel or the event stream.
    """

    _log = Logger()

    def __init__(self):
        super().__init__()
        self._operation = None  # the ConsoleOperation this channel belongs to
        self._channel = None
        self._session = None  # the "0" channel's SerialSession (used by _WebSocketViewer)
        self._unsubscribe = None
        self._caller = None

    def connectionMade(self):
        super().connectionMade()
        self.factory.connections.add(self)
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()  # Twisted web's channel, gone now

    def connectionLost(self, reason):
        self.factory.connections.discard(self)
        super().connectionLost(reason)

    _denied = None  # the reason of our own refusal (any other is Autobahn's)
    _denied_close_code = None

    def onConnect(self, request):
        try:
            return self._connect(request)
        except ConnectionDeny as deny:
            self._denied = deny.reason
            raise

    def _connect(self, request):
        try:
            if request.path == "/1.0/events":
                return self._connect_events(request)
            parts = request.path.split("/")
            if len(parts) == 5 and parts[:3] == ["", "1.0", "operations"] \
                    and parts[4] == "websocket":
                return self._connect_channel(request, parts[3])
            raise ConnectionDeny(404, "not found")
        except ConnectionDeny:
            raise
        except Exception:
            self._log.failure("refusing an LXD WebSocket after an unexpected error")
            raise ConnectionDeny(500, "internal error") from None

    def _connect_events(self, request):
        if request.headers.get("origin") is not None:
            raise ConnectionDeny(403, "browsers may not open the event stream")
        self._caller = self.factory.credential.identify(self.transport, request.headers.get)
        if self._caller is None:
            raise ConnectionDeny(self.factory.credential.refusal, NOT_AUTHORIZED)
        return None

    def _connect_channel(self, request, op_id):
        ctx = self.factory.ctx
        credential = self.factory.credential
        secret = OperationSecret(
            self.factory.operations, op_id, (request.params.get("secret") or [None])[0],
            credential.identify(self.transport, request.headers.get), credential.ambient)
        outcome = ctx.admission.admit(
            _source_address(request.peer), secret, LXD,
            lambda grant: secret.console.open(secret.channel, self, request.peer))
        if isinstance(outcome, Refusal):
            ctx.admission.record(request.peer, outcome, console_type="serial")
            reason = outcome.message or outcome.detail or outcome.reason
            self._denied, self._denied_close_code = reason, outcome.close_code
            deny = ConnectionDeny(outcome.status, reason)
            if outcome.delay <= 0:
                raise deny

            def later():
                raise deny

            return task.deferLater(ctx.reactor, outcome.delay, later)
        self._operation, self._channel = secret.console, secret.channel
        return None

    def onOpen(self):
        if self._caller is not None:
            caller = self._caller

            def send(operation):
                if operation.caller == caller and self.state == self.STATE_OPEN:
                    message = event(operation, self.factory.ctx.reactor.seconds())
                    self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)

            self._unsubscribe = self.factory.operations.subscribe(send)
        elif self._operation is not None:
            self._operation.opened(self._channel)

    def onMessage(self, payload, isBinary):
        if self._channel == "0":
            if self._session is not None:
                self._session.viewer_data(payload)
        elif self._channel == "control":
            self._control(payload)
        # the event stream takes nothing from the client

    def _control(self, payload):
        if len(payload) > MAX_CONTROL:
            self.sendClose(1009, "control messages are at most 32 KiB")
            return
        try:
            message = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            message = None
        if not isinstance(message, dict):
            self.sendClose(1007, "control messages are JSON objects")
            return
        self._log.debug("LXD console control command {command}",
                        command=str(message.get("command"))[:40])

    def onClose(self, wasClean, code, reason):
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        operation, self._operation = self._operation, None
        if operation is not None:
            operation.channel_closed(self._channel)

    def failHandshake(self, reason, code=400, responseHeaders=None):
        # Autobahn's own reasons may quote the request line, which holds the secret: those
        # are neither logged nor echoed.
        if reason != self._denied:
            reason = "malformed WebSocket handshake"
        self.wasNotCleanReason = reason
        self.sendHttpErrorResponse(code, reason, responseHeaders)
        self.dropConnection(abort=False)

    def sendHttpErrorResponse(self, code, reason, responseHeaders=None):
        trace, document = error_document(ApiError(code, reason, self._denied_close_code),
                                         envelope.FAMILY)
        body = envelope.encode(document)
        phrase = http.RESPONSES.get(code, b"Error").decode("ascii")
        head = [f"HTTP/1.1 {code} {phrase}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", "Cache-Control: no-store",
                f"X-Request-Id: {trace}", "Connection: close"]
        head += [f"{name}: {value}" for name, value in responseHeaders or ()]
        self.sendData(("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body)


def make_factory(ctx, operations, credential):
    """
    The WebSocket factory of one LXD listener.
    """
    factory = WebSocketServerFactory(None, server="consoleproxy")
    factory.protocol = LxdChannelProtocol
    factory.ctx = ctx
    factory.operations = operations
    factory.credential = credential
    factory.connections = set()
    factory.setProtocolOptions(
        maxFramePayloadSize=MAX_MESSAGE,
        maxMessagePayloadSize=MAX_MESSAGE,
        failByDrop=False,
        openHandshakeTimeout=15,
        closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
        autoPingInterval=30,
        autoPingTimeout=30,
    )
    return factory
