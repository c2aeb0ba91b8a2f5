"""
The LXD WebSockets: an operation's channels (C{/1.0/operations/ID/websocket?secret=S}) and
the event stream (C{/1.0/events}) of the caller's operations. What a console operation does
with its channels is L{vncproxy.lxd.console}.

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

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import task
from twisted.logger import Logger
from twisted.web import http

from vncproxy.admission import Refusal
from vncproxy.clientaddr import peer_host
from vncproxy.lxd import envelope
from vncproxy.lxd.console import LXD, NOT_AUTHORIZED, OperationSecret
from vncproxy.lxd.operations import event
from vncproxy.web.errors import ApiError, error_document
from vncproxy.web.websocket import server_factory

#: Largest control message (LXD reads at most this much of one).
MAX_CONTROL = 32 * 1024


class LxdChannelProtocol(WebSocketServerProtocol):
    """
    One LXD WebSocket: an operation channel or the event stream.
    """

    _log = Logger()

    def __init__(self):
        super().__init__()
        self._operation = None  # the ConsoleOperation this channel belongs to
        self._channel = None
        self._session = None  # the "0" channel's SerialSession (used by WebSocketViewer)
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
            peer_host(request.peer), secret, LXD,
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
    factory = server_factory(ctx, LxdChannelProtocol)
    factory.operations = operations
    factory.credential = credential
    return factory
