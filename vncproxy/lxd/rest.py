"""
The LXD REST routes (C{/1.0/...}), in LXD's envelopes, on three kinds of listener: the
C{[lxd] listen} UNIX socket, the C{[lxd] listen_tls} TLS port (trusted client certificates),
and the token API's listener (our API keys). Which caller may do what is one rule: C{GET /1.0}
answers everyone (an untrusted caller learns that it is untrusted, which C{lxc remote add}
needs); everything else needs the listener's credential; the operation WebSocket needs only
its secret (as in LXD).

    GET    /1.0                                server document
    GET    /1.0/instances/{name}               the instance (name or UUID)
    GET    /1.0/instances/{name}/console       the console log (raw bytes: C{--show-log})
    DELETE /1.0/instances/{name}/console       clear the log
    POST   /1.0/instances/{name}/console       an interactive console: 202, an operation
    GET    /1.0/operations/{id}                an operation of the caller
    GET    /1.0/operations/{id}/websocket      upgrade (C{?secret=S}): C{0} or C{control}
    GET    /1.0/events                         upgrade: the caller's operation events
"""

import re

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource

from vncproxy.audit import audit
from vncproxy.lxd import envelope
from vncproxy.lxd.console import ConsoleOperation
from vncproxy.web.api import check_serial_attach
from vncproxy.web.errors import ApiError, read_json_object
from vncproxy.web.lookup import describe_instance
from vncproxy.web.routes import RouteTable, render_later
from vncproxy.web.site import MAX_BODY

NOT_AUTHORIZED = "not authorized"
#: The paths that take a WebSocket (both GET).
WEBSOCKET_PATHS = re.compile(r"/1\.0/(events|operations/[^/]+/websocket)")


def vga_refusal(instance):
    return (f"SPICE (type vga) is not offered for instance {instance}: its graphical console "
            f"is VNC here (noVNC or a native viewer): POST /v1/instances/{instance}"
            f'/console_access_token with {{"console_type": "vnc"}}, or Nova\'s '
            f"remote-consoles, gives its URL")


def busy_refusal(instance):
    # LXD's own words (lxc prints them), then ours: which instance, and how.
    return (f"This console is already connected. Force is required to take it over "
            f'(instance {instance}: send "force": true)')


def _is_upgrade(request):
    return b"websocket" in (request.getHeader(b"upgrade") or b"").lower()


class LxdResource(Resource):
    """
    @param ctx: the L{vncproxy.context.ProxyContext}.
    @param operations: the L{vncproxy.lxd.operations.OperationStore}.
    @param credential: who may call through this listener (L{vncproxy.lxd.trust}).
    @param websocket: Autobahn's C{WebSocketResource} of the channels
        (L{vncproxy.lxd.channels.make_factory}).
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, ctx, operations, credential, websocket):
        super().__init__()
        self._ctx = ctx
        self._operations = operations
        self._credential = credential
        self._websocket = websocket
        # (method, path template, handler, needs the credential); openapi.json lists the same.
        self.routes = [
            ("GET", "/1.0", self._server, False),
            ("GET", "/1.0/instances/{name}", self._instance, True),
            ("GET", "/1.0/instances/{name}/console", self._get_log, True),
            ("DELETE", "/1.0/instances/{name}/console", self._clear_log, True),
            ("POST", "/1.0/instances/{name}/console", self._console, True),
            ("GET", "/1.0/operations/{id}", self._operation, True),
            ("GET", "/1.0/operations/{id}/websocket", self._needs_upgrade, False),
            ("GET", "/1.0/events", self._needs_upgrade, True),
        ]
        self._table = RouteTable(self.routes, "not found", "method not allowed")

    def render(self, request):
        if _is_upgrade(request) and WEBSOCKET_PATHS.fullmatch(
                request.path.decode("latin-1")):
            request.setHeader(b"cache-control", b"no-store")
            return self._websocket.render(request)  # the channels decide (secret, credential)
        return render_later(request, self._dispatch, envelope.render, envelope.FAMILY,
                            self._log)

    def _caller(self, request):
        def header(name):
            value = request.getHeader(name.encode("latin-1"))
            return value.decode("latin-1") if value else None

        channel = getattr(request, "channel", None)  # none on a test's DummyRequest
        return self._credential.identify(getattr(channel, "transport", None), header)

    def _dispatch(self, request):
        handler, needs_credential, args = self._table.find(request)
        caller = self._caller(request)
        if needs_credential and caller is None:
            if self._credential.refusal == 401:
                request.setHeader(b"www-authenticate", b'Bearer realm="consoleproxy"')
            raise ApiError(self._credential.refusal, NOT_AUTHORIZED)
        return handler(request, caller, *args)

    # -- handlers ------------------------------------------------------------------------------

    def _server(self, request, caller):
        return 200, envelope.sync(envelope.server_document(trusted=caller is not None))

    @defer.inlineCallbacks
    def _instance(self, request, caller, name):
        info = yield describe_instance(self._ctx, name)
        return 200, envelope.sync(envelope.instance_document(info, self._ctx.reactor.seconds()))

    def _serial_log(self, info):
        if self._ctx.serial is None:
            raise ApiError(501, "serial consoles are not enabled")
        return self._ctx.serial.log(info.uuid)

    @defer.inlineCallbacks
    def _get_log(self, request, caller, name):
        info = yield describe_instance(self._ctx, name)
        data = self._serial_log(info).tail(None)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"cache-control", b"no-store")
        return data

    @defer.inlineCallbacks
    def _clear_log(self, request, caller, name):
        info = yield describe_instance(self._ctx, name)
        self._serial_log(info)
        self._ctx.serial.clear(info.uuid)
        self._log.info("serial console log of {instance} cleared by {caller}",
                       instance=info.uuid, caller=caller, event="clear_log")
        return 200, envelope.sync({})

    @defer.inlineCallbacks
    def _console(self, request, caller, name):
        body = read_json_object(request, MAX_BODY)
        console_type = body.get("type") or "console"
        force = body.get("force", False)
        if console_type not in ("console", "vga"):
            raise ApiError(400, f"Unknown console type {str(console_type)[:20]!r}")
        if not isinstance(force, bool):
            raise ApiError(400, "force must be true or false")
        for key in ("width", "height"):
            if not isinstance(body.get(key, 0), int):
                raise ApiError(400, f"{key} must be a number")
        info = yield describe_instance(self._ctx, name)
        if console_type == "vga":
            raise ApiError(400, vga_refusal(info.name))
        if not info.active:
            raise ApiError(400, "Instance is not running")
        hub = self._ctx.serial.hub(info.uuid) if self._ctx.serial is not None else None
        if hub is not None and hub.writer is not None and not force:
            raise ApiError(409, busy_refusal(info.name))
        check_serial_attach(self._ctx, info, force, read_only=False)
        operation, secrets = self._operations.create(info.name, caller)
        ConsoleOperation(self._ctx, self._operations, operation, info, force)
        audit("grant", console_type="serial", instance=info.uuid, caller=caller,
              grant_id=operation.id, api="lxd")
        request.setHeader(b"location", operation.url.encode("ascii"))
        return 202, envelope.async_(operation.document(fds=secrets))

    def _operation(self, request, caller, op_id):
        operation = self._operations.get(op_id)
        if operation is None or operation.caller != caller:
            raise ApiError(404, "Operation not found")
        return 200, envelope.sync(operation.document())

    def _needs_upgrade(self, request, caller, *args):
        raise ApiError(400, "this path takes a WebSocket connection")
