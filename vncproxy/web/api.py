"""
The token API (listener C{api}): JSON over HTTP, API-key authenticated.

Routes (see the README and INTERFACE for the full contract)::

    POST /v1/instances/{instance}/console_access_token   IBM VPC shape: mint a token
    GET  /healthz                                         liveness and libvirt connectivity (no key)

Every handler raises L{ApiError} for a refusal; one renderer turns it into
C{{"error": {"code", "message"}}}. Handlers never see or log a token after minting it.
"""

import re
from datetime import datetime, timezone
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from vncproxy.hypervisor import HypervisorError, NoSuchInstance
from vncproxy.sessions import LimitReached
from vncproxy.web.auth import presented_key
from vncproxy.web.errors import ApiError, read_json_object, render_error, render_json

MAX_BODY = 64 * 1024


def _iso(timestamp):
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiResource(Resource):
    """
    The whole API as one leaf resource with a route table.

    @param ctx: the L{vncproxy.context.ProxyContext}.
    @param keys: a L{vncproxy.web.auth.KeyChecker}.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, ctx, keys):
        super().__init__()
        self._ctx = ctx
        self._keys = keys
        # (method, compiled path pattern, handler, needs an API key)
        self._routes = [
            ("POST", re.compile(r"/v1/instances/([^/]+)/console_access_token"),
             self._grant_ibm, True),
            ("GET", re.compile(r"/healthz"), self._healthz, False),
        ]

    def render(self, request):
        finished = []
        request.notifyFinish().addBoth(finished.append)

        def respond(result):
            code, body = result
            return render_json(request, code, body)

        def fail(failure):
            if failure.check(ApiError):
                return render_error(request, failure.value)
            self._log.failure("API request failed", failure)
            return render_error(request, ApiError(500, "internal error"))

        def write(data):
            if not finished:  # the client may have gone away meanwhile
                request.write(data)
                request.finish()

        d = defer.maybeDeferred(self._dispatch, request)
        d.addCallbacks(respond, fail)
        d.addCallback(write)
        return NOT_DONE_YET

    def _dispatch(self, request):
        try:
            path = request.path.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "path is not UTF-8") from None
        method = request.method.decode("latin-1")
        allowed = []
        for route_method, pattern, handler, needs_key in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            caller = None
            if needs_key:
                caller = self._keys.identify(presented_key(request))
                if caller is None:
                    request.setHeader(b"www-authenticate", b'Bearer realm="consoleproxy"')
                    raise ApiError(401, "missing or invalid API key")
            return handler(request, caller, *(unquote(g) for g in match.groups()))
        if allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
            raise ApiError(405, f"method {method} not allowed here")
        raise ApiError(404, "no such resource")

    @defer.inlineCallbacks
    def _describe_running(self, instance):
        try:
            info = yield self._ctx.hypervisor.describe(instance)
        except NoSuchInstance:
            raise ApiError(404, f"instance {instance} not found") from None
        except HypervisorError:
            self._log.failure("hypervisor lookup of {instance} failed", instance=instance)
            raise ApiError(503, "hypervisor unavailable") from None
        if not info.active:
            raise ApiError(409, f"instance {instance} is not running")
        return info

    @defer.inlineCallbacks
    def _grant_ibm(self, request, caller, instance):
        body = read_json_object(request, MAX_BODY)
        console_type = body.get("console_type")
        if console_type not in ("vnc", "serial"):
            raise ApiError(400, 'console_type must be "vnc" or "serial"')
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise ApiError(400, "force must be true or false")
        if console_type == "serial":
            raise ApiError(501, "serial consoles are not implemented yet")
        info = yield self._describe_running(instance)
        if info.vnc is None:
            raise ApiError(409, f"instance {instance} has no VNC console")
        try:
            self._ctx.sessions.check(info.uuid, console_type)
        except LimitReached as e:
            raise ApiError(409, str(e)) from None
        secret, grant = self._ctx.tokens.mint(
            info.uuid, console_type, force=force, caller=caller, instance_name=info.name)
        self._log.info(
            "granted {console_type} token {grant_id} for {instance} to {caller}",
            console_type=console_type, grant_id=grant.id, instance=info.uuid, caller=caller,
            event="grant")
        href = (f"{self._ctx.config.websocket_base_url}/v1/instances/{info.uuid}/console"
                f"?access_token={secret}")
        body = {
            "access_token": secret,
            "console_type": console_type,
            "created_at": _iso(grant.created_at),
            "expires_at": _iso(grant.expires_at),
            "force": force,
            "href": href,
        }
        if grant.vnc_password is not None:  # for native viewers on the xvpvnc port
            body["password"] = grant.vnc_password
            body["vnc_url"] = self._ctx.config.native_vnc_url(grant.vnc_password)
        return 200, body

    @defer.inlineCallbacks
    def _healthz(self, request, caller):
        alive = yield self._ctx.hypervisor.ping()
        if alive:
            return 200, {"status": "ok", "libvirt": "connected"}
        return 503, {"status": "degraded", "libvirt": "unreachable"}
