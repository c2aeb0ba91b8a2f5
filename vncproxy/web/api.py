"""
The token API (listener C{api}): JSON over HTTP, API-key authenticated.

Three families of routes, each in the shape its clients already speak (INTERFACE.md):

    POST /v1/instances/{instance}/console_access_token           IBM VPC
    POST /v2.1/servers/{server_id}/remote-consoles               OpenStack (microversion >= 2.6)
    POST /v2.1/{project_id}/servers/{server_id}/remote-consoles
    POST /v2.1/servers/{server_id}/action                        OpenStack legacy actions
    POST /v2.1/{project_id}/servers/{server_id}/action             (os-getVNCConsole, ...)
    GET  / , /v2.1 , /v2.1/                                       Nova's version documents
    GET  /v2.1[/{project_id}]/servers[/detail][?name=N]           the servers, from libvirt
    GET  /v2.1[/{project_id}]/servers/{server_id}
    GET|DELETE /v1/instances/{instance}/console_log[?tail=N]     serial console logs (consolelog.py)
    GET /v1/instances/{instance}/console_sessions, DELETE .../{id},
    POST /v1/instances/{instance}/console_actions                operators (web/operator.py)
    /1.0/...                                                      LXD's API (vncproxy.lxd)
    GET  /healthz  GET /metrics  GET /openapi.json               no key needed

The route table is the single list of what exists; C{openapi.json} describes the same routes
and a test holds the two together. Every handler raises L{ApiError} for a refusal; one renderer
answers it in the format of the path's API family (L{family_of}). Tokens appear only in
response bodies.
"""

import json
import os

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.resource import Resource

from vncproxy.audit import audit, refusal_reason
from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import HypervisorError
from vncproxy.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from vncproxy.ratelimit import FailureLimiter
from vncproxy.serial.hub import HubBusy, HubFull
from vncproxy.serial.manager import SerialUnavailable, has_serial_pty
from vncproxy.sessions import LimitReached
from vncproxy.web import nova
from vncproxy.web.auth import presented_key
from vncproxy.web.consolelog import ConsoleLogRoutes
from vncproxy.web.errors import ApiError, family_of, read_json_object, render_json
from vncproxy.web.lookup import describe_instance, hypervisor_down, iso_utc
from vncproxy.web.nova import base_url, negotiate_microversion
from vncproxy.web.operator import OperatorRoutes
from vncproxy.web.routes import RouteTable, render_later
from vncproxy.web.site import MAX_BODY, request_client

OPENAPI_PATH = os.path.join(os.path.dirname(__file__), "openapi.json")


def _peer(request):
    """The client's address as the audit writes WebSocket peers (C{tcp4:HOST:PORT})."""
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    if host is None:
        return str(address)
    return f"{'tcp6' if ':' in host else 'tcp4'}:{host}:{address.port}"



def check_serial_attach(ctx, info, force, read_only):
    """
    Refuse a serial console that could not attach now (409), as IBM does at grant time.

    @raise ApiError: 501 without serial consoles, 409 when not captured, busy or full.
    """
    if ctx.serial is None:
        raise ApiError(501, "serial consoles are not enabled")
    if not has_serial_pty(info):
        raise ApiError(409, f"instance {info.name} has no serial console")
    if not ctx.serial.serves(info):
        raise ApiError(409, f"serial console of instance {info.name} is not served here "
                            "([serial] domains)", CloseCode.CONSOLE_UNAVAILABLE)
    try:
        ctx.serial.check_attach(info.uuid, interactive=not read_only, force=force)
    except SerialUnavailable as e:
        raise ApiError(409, f"{e} for instance {info.name}",
                       CloseCode.CONSOLE_UNAVAILABLE) from None
    except HubBusy:
        raise ApiError(409, "serial console in use (force: true takes it over, "
                            "read_only: true watches)", CloseCode.LIMIT_REACHED) from None
    except HubFull as e:
        raise ApiError(409, str(e), CloseCode.LIMIT_REACHED) from None


class ApiResource(Resource):
    """
    The whole API as one leaf resource with a route table.

    @param ctx: the L{vncproxy.context.ProxyContext}.
    @param keys: a L{vncproxy.web.auth.KeyChecker}.
    @param lxd: the L{vncproxy.lxd.rest.LxdResource} answering C{/1.0} (LXD's API, with our
        API keys as the credential), or C{None}.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, ctx, keys, lxd=None):
        super().__init__()
        self._ctx = ctx
        self._keys = keys
        config = ctx.config
        self._key_failures = FailureLimiter(ctx.reactor, config.ratelimit_window,
                                            config.ratelimit_slow_after,
                                            config.ratelimit_refuse_after)
        self._lxd = lxd
        # (method, path template, handler, needs an API key); openapi.json lists the same.
        self.routes = [
            ("POST", "/v1/instances/{instance}/console_access_token", self._grant_ibm, True),
            ("POST", "/v2.1/servers/{server_id}/remote-consoles", self._remote_console, True),
            ("POST", "/v2.1/{project_id}/servers/{server_id}/remote-consoles",
             self._remote_console_project, True),
            ("POST", "/v2.1/servers/{server_id}/action", self._server_action, True),
            ("POST", "/v2.1/{project_id}/servers/{server_id}/action",
             self._server_action_project, True),
            ("GET", "/", self._versions, False),
            ("GET", "/v2.1", self._version, False),
            ("GET", "/v2.1/", self._version, False),
            ("GET", "/v2.1/servers", self._servers, True),
            ("GET", "/v2.1/servers/detail", self._servers_detail, True),
            ("GET", "/v2.1/servers/{server_id}", self._server, True),
            ("GET", "/v2.1/{project_id}/servers", self._servers, True),
            ("GET", "/v2.1/{project_id}/servers/detail", self._servers_detail, True),
            ("GET", "/v2.1/{project_id}/servers/{server_id}", self._server_project, True),
            *ConsoleLogRoutes(ctx).routes(),
            *OperatorRoutes(ctx).routes(),
            ("GET", "/healthz", self._healthz, False),
            ("GET", "/metrics", self._metrics, False),
            ("GET", "/openapi.json", self._openapi, False),
        ]
        self._table = RouteTable(self.routes, "no such resource", "method {method} not allowed here")
        if lxd is not None:  # dispatched by the LXD resource, listed here for openapi.json
            self.routes = self.routes + lxd.routes

    def render(self, request):
        if self._lxd is not None and (request.path == b"/1.0"
                                      or request.path.startswith(b"/1.0/")):
            return self._lxd.render(request)
        return render_later(request, self._dispatch, render_json,
                            family_of(request.path.decode("utf-8", "replace")), self._log)

    def _dispatch(self, request):
        handler, needs_key, args = self._table.find(request)
        caller = None
        if needs_key:
            caller = self._authenticate(request, request.method.decode("latin-1"),
                                        request.path.decode("utf-8"))
            if isinstance(caller, defer.Deferred):
                return caller
        return handler(request, caller, *args)

    def _authenticate(self, request, method, path):
        """
        The caller's label for a right API key. Wrong or missing keys are audited and count
        against the client's address in a limiter of their own (C{[ratelimit]} settings; a
        console client's bad tokens do not lock the API caller out): after C{slow_after}
        failures each 401 comes later, after C{refuse_after} the address gets 429 for the
        window, right key or not (an answer that told a right key apart would keep the guessing
        going).

        @return: the label, or a L{Deferred} failing with the L{ApiError} to answer.
        """
        limiter, client = self._key_failures, request_client(request)
        host = getattr(request.getClientAddress(), "host", None)
        peer = _peer(request) if client == host else client
        if limiter.blocked(client):
            audit("refusal", console_type="api", peer=peer,
                  reason=refusal_reason("too many failed attempts", f"{method} {path}"))
            return defer.fail(ApiError(429, "too many failed attempts: try again later"))
        presented = presented_key(request)
        caller = self._keys.identify(presented)
        if caller is not None:
            return caller
        # audited like every other refusal; never the presented key itself
        audit("refusal", console_type="api", peer=peer,
              reason=refusal_reason("missing or invalid API key", f"{method} {path}: " + (
                  "no key" if presented is None else "unknown key")))
        request.setHeader(b"www-authenticate", b'Bearer realm="consoleproxy"')
        refusal = ApiError(401, "missing or invalid API key")
        delay = limiter.failed(client)
        if delay <= 0:
            return defer.fail(refusal)

        def refuse():
            raise refusal

        return deferLater(self._ctx.reactor, delay, refuse)

    # -- minting -------------------------------------------------------------------------------

    def _lookup(self, instance, missing="instance {} not found"):
        return describe_instance(self._ctx, instance, missing)

    @defer.inlineCallbacks
    def _mint(self, instance, console_type, force, caller, read_only=False):
        """
        Check the instance and the session limit (for serial: that the console is captured,
        free for an interactive session or forced, and under its viewer limit), then mint a
        token.

        @return: a Deferred firing with C{(secret, grant)}.
        """
        info = yield self._lookup(instance)
        if not info.active:
            raise ApiError(409, f"instance {instance} is not running")
        if console_type == "vnc" and info.vnc is None:
            raise ApiError(409, f"instance {instance} has no VNC console")
        if console_type == "serial":
            self._check_serial(info, force, read_only)
        try:
            self._ctx.sessions.check(info.uuid, console_type, read_only)
        except LimitReached as e:
            raise ApiError(409, str(e), CloseCode.LIMIT_REACHED) from None
        secret, grant = self._ctx.tokens.mint(
            info.uuid, console_type, force=force, caller=caller, instance_name=info.name,
            read_only=read_only)
        audit("grant", console_type=console_type, instance=info.uuid, caller=caller,
              grant_id=grant.id)
        return secret, grant

    # -- IBM VPC -------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _grant_ibm(self, request, caller, instance):
        body = read_json_object(request, MAX_BODY)
        console_type = body.get("console_type")
        if console_type not in ("vnc", "serial"):
            raise ApiError(400, 'console_type must be "vnc" or "serial"')
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise ApiError(400, "force must be true or false")
        read_only = body.get("read_only", False)
        if not isinstance(read_only, bool):
            raise ApiError(400, "read_only must be true or false")
        secret, grant = yield self._mint(instance, console_type, force, caller, read_only)
        href = self._ctx.urls.ibm_href(grant.instance_uuid, secret)
        body = {
            "access_token": secret,
            "console_type": console_type,
            "created_at": iso_utc(grant.created_at),
            "expires_at": iso_utc(grant.expires_at),
            "force": force,
            "href": href,
        }
        if grant.vnc_password is not None:  # for native viewers ([listen] vnc, xvpvnc)
            body["password"] = grant.vnc_password
            body["vnc_url"] = self._ctx.urls.vnc(grant.vnc_password)
        if read_only:
            body["read_only"] = True
        return 200, body

    def _check_serial(self, info, force, read_only):
        check_serial_attach(self._ctx, info, force, read_only)

    # -- OpenStack -----------------------------------------------------------------------------

    def _console_url(self, console_type, secret):
        urls = self._ctx.urls
        if console_type == "novnc":
            return urls.novnc(secret)
        if console_type == "xvpvnc":
            return urls.xvpvnc(secret)
        return urls.serial(secret)

    def _remote_console_project(self, request, caller, project_id, server_id):
        return self._remote_console(request, caller, server_id)

    @defer.inlineCallbacks
    def _remote_console(self, request, caller, server_id):
        version = negotiate_microversion(request)
        if version is not None and version < nova.MIN_REMOTE_CONSOLES:
            raise ApiError(404, "remote-consoles needs microversion 2.6 or later")
        body = read_json_object(request, MAX_BODY)
        console = body.get("remote_console")
        if not isinstance(console, dict):
            raise ApiError(400, "body must have a remote_console object")
        protocol, console_type = console.get("protocol"), console.get("type")
        nova.check_pair(protocol, console_type)
        read_only = console.get("read_only", False)  # our extension of Nova's body
        if not isinstance(read_only, bool):
            raise ApiError(400, "read_only must be true or false")
        secret, _ = yield self._mint(server_id, protocol, False, caller, read_only)
        return 200, {"remote_console": {
            "protocol": protocol, "type": console_type,
            "url": self._console_url(console_type, secret)}}

    def _server_action_project(self, request, caller, project_id, server_id):
        return self._server_action(request, caller, server_id)

    @defer.inlineCallbacks
    def _server_action(self, request, caller, server_id):
        negotiate_microversion(request)
        body = read_json_object(request, MAX_BODY)
        actions = [name for name in body if name in nova.LEGACY_ACTIONS]
        if len(actions) != 1 or len(body) != 1:
            raise ApiError(400, "body must hold exactly one of "
                                + ", ".join(sorted(nova.LEGACY_ACTIONS)))
        action = actions[0]
        arguments = body[action]
        if not isinstance(arguments, dict):
            raise ApiError(400, f"{action} must be an object")
        protocol, console_type = nova.LEGACY_ACTIONS[action], arguments.get("type")
        nova.check_pair(protocol, console_type)
        secret, _ = yield self._mint(server_id, protocol, False, caller)
        return 200, {"console": {"type": console_type,
                                 "url": self._console_url(console_type, secret)}}

    # -- OpenStack: discovery and servers -----------------------------------------------------

    def _versions(self, request, caller):
        return 200, nova.versions_document(base_url(request))

    def _version(self, request, caller):
        return 200, nova.version_document(base_url(request))

    @defer.inlineCallbacks
    def _servers(self, request, caller, project_id=None, detail=False):
        negotiate_microversion(request)
        name = nova.name_filter(request.args)
        try:
            infos = yield self._ctx.hypervisor.list_all()
        except HypervisorError as e:
            hypervisor_down(e)
        base = base_url(request)
        return 200, {"servers": [
            nova.server_view(info, base, project_id, detail)
            for info in sorted(infos, key=lambda i: (i.name, i.uuid))
            if name is None or info.name == name]}

    def _servers_detail(self, request, caller, project_id=None):
        return self._servers(request, caller, project_id, detail=True)

    def _server_project(self, request, caller, project_id, server_id):
        return self._server(request, caller, server_id, project_id)

    @defer.inlineCallbacks
    def _server(self, request, caller, server_id, project_id=None):
        negotiate_microversion(request)
        missing = "Instance {} could not be found."
        if not nova.is_server_id(server_id):  # Nova looks servers up by UUID only
            raise ApiError(404, missing.format(server_id))
        info = yield self._lookup(server_id, missing)
        return 200, {"server": nova.server_view(info, base_url(request), project_id,
                                                detail=True)}

    # -- operations ----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _healthz(self, request, caller):
        alive = yield self._ctx.hypervisor.ping()
        if alive:
            return 200, {"status": "ok", "libvirt": "connected"}
        return 503, {"status": "degraded", "libvirt": "unreachable"}

    def _metrics(self, request, caller):
        request.setHeader(b"content-type", METRICS_CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return self._ctx.metrics.render()

    def _openapi(self, request, caller):
        with open(OPENAPI_PATH, "rb") as f:
            document = f.read()
        request.setHeader(b"content-type", b"application/json")
        return document


def load_openapi():
    with open(OPENAPI_PATH, encoding="utf-8") as f:
        return json.load(f)
