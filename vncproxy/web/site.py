"""
The console listener's HTTP site: WebSocket upgrades on the console paths, and a redacting
access log (tokens travel in query strings and Referer headers, so neither is ever logged).
"""

from twisted.web.resource import Resource
from twisted.web.server import Site

from vncproxy.web.websocket import _INSTANCE_PATH

_WEBSOCKET_PATHS = (b"/", b"/websockify")


def redacted_log_line(timestamp, request):
    """
    An access log line without query string or Referer, for L{Site}'s C{logFormatter}.
    """
    path = request.path.decode("latin-1", "replace")
    agent = (request.getHeader(b"user-agent") or b"-").decode("latin-1", "replace")
    host = getattr(request.getClientAddress(), "host", "-")
    return (
        f'{host} - - {timestamp} "{request.method.decode("latin-1")} {path} '
        f'{request.clientproto.decode("latin-1")}" {request.code} '
        f'{request.sentLength or "-"} "{agent}"'
    )


def _is_upgrade(request):
    upgrade = request.getHeader(b"upgrade") or b""
    return b"websocket" in upgrade.lower()


class ConsoleRoot(Resource):
    """
    Routes WebSocket upgrades on the console paths to Autobahn; everything else is plain HTTP.
    """

    isLeaf = True

    def __init__(self, websocket_resource):
        super().__init__()
        self._websocket = websocket_resource

    def render(self, request):
        path = request.path
        is_console_path = path in _WEBSOCKET_PATHS or _INSTANCE_PATH.fullmatch(
            path.decode("latin-1"))
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"referrer-policy", b"no-referrer")
        if is_console_path and _is_upgrade(request):
            return self._websocket.render(request)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if is_console_path:
            request.setResponseCode(426, b"Upgrade Required")
            request.setHeader(b"upgrade", b"websocket")
            return b"consoleproxy: this path takes a WebSocket connection with a console token\n"
        request.setResponseCode(404)
        return b"not found\n"


def make_site(root, reactor=None):
    site = Site(root, logFormatter=redacted_log_line, reactor=reactor)
    return site
