"""
The console listener's HTTP site: WebSocket upgrades on the console paths, the web clients
(L{vncproxy.web.clients}) for everything else, security headers on every response, and a
redacting access log (tokens travel in query strings and Referer headers, so neither is ever
logged).
"""

import json
from urllib.parse import unquote_to_bytes

from twisted.web.error import UnsupportedMethod
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import Request, Site

from vncproxy.clientaddr import NO_PROXIES, client_address
from vncproxy.ratelimit import PendingPerAddress
from vncproxy.web.csp import ASSET_POLICY
from vncproxy.web.errors import ApiError, error_document, family_of
from vncproxy.web.websocket import _INSTANCE_PATH

_WEBSOCKET_PATHS = (b"/", b"/websockify")


def redacted_log_line(timestamp, request):
    """
    An access log line without query string or Referer, for L{Site}'s C{logFormatter}.
    """
    path = request.path.decode("latin-1", "replace")
    agent = (request.getHeader(b"user-agent") or b"-").decode("latin-1", "replace")
    host = request_client(request)
    return (
        f'{host} - - {timestamp} "{request.method.decode("latin-1")} {path} '
        f'{request.clientproto.decode("latin-1")}" {request.code} '
        f'{request.sentLength or "-"} "{agent}"'
    )


def request_client(request):
    """
    The real client of a twisted.web request (L{vncproxy.clientaddr.client_address}): its
    C{Forwarded} / C{X-Forwarded-For} count only when it came from the site's trusted proxies.
    """
    channel = getattr(request, "channel", None)
    trusted = getattr(getattr(channel, "factory", None), "trusted", NO_PROXIES)
    headers = request.requestHeaders
    return client_address(
        request.getClientAddress(),
        [v.decode("latin-1") for v in headers.getRawHeaders(b"forwarded", [])],
        [v.decode("latin-1") for v in headers.getRawHeaders(b"x-forwarded-for", [])],
        trusted)


def has_nul(request):
    """
    Whether the request's path holds a NUL byte, raw or percent-encoded (C{%00}): no file or
    instance name can contain one, and the filesystem and libvirt calls would raise on it.
    """
    return b"\0" in unquote_to_bytes(request.path)


def _is_upgrade(request):
    upgrade = request.getHeader(b"upgrade") or b""
    return b"websocket" in upgrade.lower()


def set_security_headers(request):
    """
    The headers of every response on the console listener. Pages replace the CSP with their
    own (L{vncproxy.web.csp}); static files relax C{Cache-Control} to C{no-cache}, but
    anything whose URL has a query string (where tokens travel) is never stored.
    """
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"content-security-policy", ASSET_POLICY.encode("ascii"))
    if b"?" in request.uri:
        request.setHeader(b"cache-control", b"no-store")


class ConsoleRoot(Resource):
    """
    Routes WebSocket upgrades on the console paths to Autobahn, and plain requests to the
    web clients (or, without them, 404).

    @param websocket_resource: Autobahn's C{WebSocketResource}.
    @param web: the L{vncproxy.web.clients.WebClients} tree, or C{None}.
    @param actions: the L{vncproxy.web.pageactions.PageActions} resource served at
        C{/console_actions}, or C{None}.
    """

    isLeaf = True

    def __init__(self, websocket_resource, web=None, actions=None, prefix=""):
        super().__init__()
        self._websocket = websocket_resource
        self._web = web
        self._actions = actions
        self._prefix = prefix.rstrip("/").encode("utf-8")

    def render(self, request):
        if self._prefix and not strip_prefix(request, self._prefix):
            set_security_headers(request)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setResponseCode(404)
            return b"not found\n"
        path = request.path
        is_console_path = path in _WEBSOCKET_PATHS or _INSTANCE_PATH.fullmatch(
            path.decode("latin-1"))
        set_security_headers(request)
        if has_nul(request):
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setResponseCode(400)
            return b"bad request: NUL byte in the path\n"
        if is_console_path and _is_upgrade(request):
            request.setHeader(b"cache-control", b"no-store")
            return self._websocket.render(request)
        if is_console_path and (path != b"/" or request.args):
            # A console URL opened as a web page (or a client that forgot the upgrade).
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setResponseCode(426, b"Upgrade Required")
            request.setHeader(b"upgrade", b"websocket")
            return b"consoleproxy: this path takes a WebSocket connection with a console token\n"
        if path == b"/console_actions" and self._actions is not None:
            request.setHeader(b"cache-control", b"no-store")
            try:
                return self._actions.render(request)
            except UnsupportedMethod:
                return _method_not_allowed(request, (b"POST",))
        if self._web is not None:
            # This resource is a leaf, so the whole path is still in request.postpath.
            try:
                return getChildForRequest(self._web, request).render(request)
            except UnsupportedMethod as e:
                # Twisted's own page would echo the URI, query string (the token) included.
                return _method_not_allowed(request, e.allowedMethods or (b"GET", b"HEAD"))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setResponseCode(404)
        return b"not found\n"


def strip_prefix(request, prefix):
    """
    Behind a front door that keeps this node's public path prefix (C{[console] prefix = kept}):
    remove C{prefix} from the request's path, URI and C{postpath}, so that everything below
    (and Autobahn, which re-reads C{request.uri}) sees the paths of a node served at the root.

    @return: C{False} when the path is not under C{prefix} (answer 404).
    """
    path = request.path
    if path == prefix:
        path = b"/"
    elif path.startswith(prefix + b"/"):
        path = path[len(prefix):]
    else:
        return False
    request.path = path
    request.uri = path + request.uri[len(request.uri.split(b"?", 1)[0]):]
    request.prepath = []
    request.postpath = path.split(b"/")[1:]
    return True


def _method_not_allowed(request, allowed):
    request.setResponseCode(405)
    request.setHeader(b"allow", b", ".join(allowed))
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"method not allowed\n"


class BoundedHTTPChannel(HTTPChannel):
    """
    An HTTP channel that a slow or hostile peer cannot hold open: each request's head and body
    must arrive within the site's C{header_timeout} in total (dribbling a byte at a time does
    not reset it, unlike the idle timeout), and each source address may have at most
    C{max_pending_per_address} connections that have not yet sent a complete request.
    """

    _deadline = None
    _pending = False
    _capped = True
    _request_line_seen = False

    def connectionMade(self):
        super().connectionMade()
        site = self.factory
        self._source = client_address(self.transport.getPeer())
        # A trusted front proxy carries many clients: it is not held to one address's cap.
        self._capped = self._source not in site.trusted
        if not site.pending.admit(self._source, self._shed, capped=self._capped):
            self.transport.abortConnection()
            return
        self._pending = True
        self._arm()

    def _shed(self):
        # The oldest pending connection on a listener over its total ([http] max_pending).
        self._disarm()
        if self.transport is not None:
            self.transport.abortConnection()

    def _arm(self):
        self._deadline = self.callLater(self.factory.header_timeout, self._too_slow)

    def _disarm(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        if self._pending:
            self._pending = False
            self.factory.pending.release(self._source, self._shed)

    def _too_slow(self):
        self._deadline = None
        self._disarm()
        if self.transport is not None:
            self.transport.abortConnection()

    def lineReceived(self, line):
        if line and not self._request_line_seen:
            self._request_line_seen = True
            parts = line.split()
            if len(parts) == 3 and parts[2] not in (b"HTTP/1.0", b"HTTP/1.1"):
                # Twisted 22.4 (Debian 12) would answer in whatever version was asked
                # ("HTTP/2.0 200 OK"); newer Twisted says 400, and so do we on every version.
                self._refuse(400, b"Bad Request", "unsupported HTTP version")
                return None
        return super().lineReceived(line)

    _body_refused = False

    def allHeadersReceived(self):
        super().allHeadersReceived()
        if self.length is not None and self.length > self.factory.max_body:
            self.refuse_body()

    def refuse_body(self):
        """
        The request body is over the site's C{max_body}: answer 413 (a JSON error) at once and
        close, without reading (or buffering) the rest.
        """
        if self._body_refused:
            return
        self._body_refused = True
        self._refuse(413, b"Request Entity Too Large",
                     f"request body larger than {self.factory.max_body} bytes")

    def _refuse(self, code, phrase, message):
        """
        Answer C{code} at once with an error in the format of the path's API family, and
        close, reading nothing more.
        """
        path = getattr(self, "_path", b"").split(b"?", 1)[0].decode("utf-8", "replace")
        trace, document = error_document(ApiError(code, message), family_of(path))
        body = json.dumps(document).encode()
        self.transport.write(b"HTTP/1.1 %d %s\r\n" % (code, phrase)
                             + b"Content-Type: application/json\r\nCache-Control: no-store\r\n"
                             b"X-Request-Id: %s\r\n" % trace.encode("ascii")
                             + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
                             + body)
        self.transport.loseConnection()

    def allContentReceived(self):
        # The deadline covers the body too: a peer that sends a complete head and then dribbles
        # its body (a "slow POST") stays counted against its address and is cut at the deadline.
        self._disarm()
        if not self._body_refused:
            super().allContentReceived()

    def requestDone(self, request):
        self._request_line_seen = False
        super().requestDone(request)
        if self.transport is not None and not self._pending:
            # keep-alive: the next request counts as pending and gets a deadline of its own
            self.factory.pending.add(self._source, self._shed)
            self._pending = True
            self._arm()

    def connectionLost(self, reason):
        self._disarm()
        super().connectionLost(reason)


class BoundedRequest(Request):
    """
    A request that stops taking body bytes past the site's C{max_body} (a chunked body has no
    length to check up front).
    """

    _body_length = 0

    def handleContentChunk(self, data):
        channel = self.channel
        if channel is None or channel._body_refused:
            return
        self._body_length += len(data)
        if self._body_length > channel.factory.max_body:
            channel.refuse_body()
            return
        super().handleContentChunk(data)


#: Largest request body either listener reads (the API's JSON bodies are far smaller).
MAX_BODY = 64 * 1024


class BoundedSite(Site):
    protocol = BoundedHTTPChannel
    requestFactory = BoundedRequest

    def __init__(self, resource, header_timeout, max_pending_per_address, idle_timeout,
                 max_body=MAX_BODY, trusted=NO_PROXIES, max_pending=None, **kw):
        super().__init__(resource, logFormatter=redacted_log_line, timeout=idle_timeout, **kw)
        self.trusted = trusted
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.pending = PendingPerAddress(max_pending_per_address, max_pending)


def make_site(root, config, reactor=None, trusted=NO_PROXIES):
    """
    A site with the configured bounds and the redacting access log.
    """
    return BoundedSite(root, config.http_header_timeout, config.http_max_pending_per_address,
                       config.http_idle_timeout, reactor=reactor, trusted=trusted,
                       max_pending=config.http_max_pending)
