"""
A route table of an HTTP API: C{(method, path template, handler, needs a credential)} rows,
matched against a request's path. The token API (L{vncproxy.web.api}) and LXD's API
(L{vncproxy.lxd.rest}) each keep one; what a credential is, and how errors are worded, stays
theirs.
"""

import re
from urllib.parse import unquote

from twisted.internet import defer
from twisted.web.server import NOT_DONE_YET

from vncproxy.web.errors import ApiError, render_error
from vncproxy.web.site import has_nul


def compile_template(template):
    """
    C{/v1/instances/{instance}/x} -> a regex with one group per path parameter.
    """
    return re.compile(re.sub(r"\\\{[a-z_]+\\\}", "([^/]+)", re.escape(template)))


class RouteTable:
    """
    @param routes: the rows, in the order they are tried.
    @param not_found: the 404's message.
    @param not_allowed: the 405's message; C{{method}} is replaced by the request's method.
    """

    def __init__(self, routes, not_found, not_allowed):
        self._compiled = [(m, compile_template(t), h, k) for m, t, h, k in routes]
        self._not_found = not_found
        self._not_allowed = not_allowed

    def find(self, request):
        """
        @return: C{(handler, needs_credential, args)}: the path parameters, unquoted.
        @raise ApiError: 400 for a path that is not UTF-8 or holds a NUL byte; 405 (with an
            C{Allow} header) when the path exists for other methods only; 404 otherwise.
        """
        try:
            path = request.path.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "path is not UTF-8") from None
        if has_nul(request):
            raise ApiError(400, "NUL byte in the path")
        method = request.method.decode("latin-1")
        allowed = []
        for route_method, pattern, handler, needs_credential in self._compiled:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            return handler, needs_credential, [unquote(g) for g in match.groups()]
        if allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
            raise ApiError(405, self._not_allowed.format(method=method))
        raise ApiError(404, self._not_found)


def render_later(request, dispatch, render, family, log):
    """
    Answer C{request} with what C{dispatch(request)} gives (a value or a L{Deferred}): a
    C{(code, body)} pair goes through C{render(request, code, body)}; bytes (a handler that wrote
    its own headers) go as they are; C{NOT_DONE_YET} means the handler streams its answer. An
    L{ApiError} is answered in C{family}'s format, anything else is logged and answered 500.
    Nothing is written once the client went away.

    @return: C{NOT_DONE_YET}, for a C{render} method to return.
    """
    finished = []
    request.notifyFinish().addBoth(finished.append)

    def respond(result):
        if isinstance(result, bytes) or result is NOT_DONE_YET:
            return result
        code, body = result
        return render(request, code, body)

    def fail(failure):
        if failure.check(ApiError):
            return render_error(request, failure.value, family)
        log.failure("API request failed: {path}", failure, path=request.path.decode("latin-1"))
        return render_error(request, ApiError(500, "internal error"), family)

    def write(data):
        if data is NOT_DONE_YET:
            return
        if not finished:  # the client may have gone away meanwhile
            request.write(data)
            request.finish()

    d = defer.maybeDeferred(dispatch, request)
    d.addCallbacks(respond, fail)
    d.addCallback(write)
    return NOT_DONE_YET


__all__ = ["RouteTable", "compile_template", "render_later"]
