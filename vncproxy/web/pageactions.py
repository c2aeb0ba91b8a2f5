"""
Console actions from a console's own page (the serial page's menu), on the console listener:

    POST /console_actions   {"token": T, "action": ..., ...}   (the bodies of the API's route)

C{T} is the token the page's session was opened with: it names the live session it opened (the
store keeps only its hash, and so does the grant), and only that session's interactive holder
may act; a read-only viewer is refused (403), as is a token with no live session (401, counted
against the source address like any failed redemption). The Origin is checked as for the
console WebSocket, and the body is JSON, so another site cannot post it from a browser.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from vncproxy.actions import BadAction, parse_action
from vncproxy.web.errors import ApiError, read_json_object, render_error, render_json
from vncproxy.web.lookup import describe_instance
from vncproxy.web.operator import perform
from vncproxy.web.site import request_client

MAX_BODY = 4096


class PageActions(Resource):
    """
    @param ctx: the L{vncproxy.context.ProxyContext}.
    @param origin_allowed: C{origin_allowed(origin, local_address)} -> bool, the console
        WebSocket's own Origin rule.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, ctx, origin_allowed):
        super().__init__()
        self._ctx = ctx
        self._origin_allowed = origin_allowed

    def render_POST(self, request):
        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = defer.maybeDeferred(self._act, request)

        def fail(failure):
            if failure.check(ApiError):
                return render_error(request, failure.value)
            self._log.failure("console action from a page failed", failure)
            return render_error(request, ApiError(500, "internal error"))

        def write(data):
            if not finished:
                request.write(data)
                request.finish()

        d.addCallbacks(lambda body: render_json(request, 202, body), fail)
        d.addCallback(write)
        return NOT_DONE_YET

    @defer.inlineCallbacks
    def _act(self, request):
        ctx = self._ctx
        source = request_client(request)
        if ctx.limiter.blocked(source):
            raise ApiError(429, "too many failed attempts")
        origin = request.getHeader(b"origin")
        if not self._origin_allowed(origin.decode("latin-1") if origin else None,
                                    request.getHost()):
            raise ApiError(403, "origin refused")
        body = read_json_object(request, MAX_BODY)
        try:
            action = parse_action(body)
        except BadAction as e:
            raise ApiError(400, str(e)) from None
        entry = ctx.sessions.holder(ctx.tokens.key_of(body.get("token")))
        if entry is None:
            ctx.limiter.failed(source)
            raise ApiError(401, "no open console session with this token")
        if entry.session.grant.read_only:
            raise ApiError(403, "a read-only session cannot send console actions")
        info = yield describe_instance(ctx, entry.instance_uuid)
        yield perform(ctx, info, action, f"console session {entry.id}")
        return {"action": action.name, "instance": info.uuid}
