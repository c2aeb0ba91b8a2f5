"""
The console WebSocket server (Autobahn), mounted on the C{console} listener.

Paths (INTERFACE.md)::

    /v1/instances/{instance}/console?access_token=T    IBM shape; {instance} must match the token
    /websockify?token=T                                 noVNC / Nova shape
    /?token=T                                           Nova serial shape, old noVNC
    (the token may also come in a "token" cookie: noVNC's habit)

Everything is decided in C{onConnect}, before the upgrade, so a refusal is a plain HTTP status:
403 for a foreign Origin, 401 for a bad, used or expired token, 409 when the instance is at its
session limit. Frames are binary; the C{binary} subprotocol is selected only when offered (modern
noVNC offers none). A serial token attaches a L{SerialSession} (text frames count as their UTF-8
bytes); its refusals (console busy, viewer limit, not captured) are 409 as well.
"""

import json
import re
from http.cookies import CookieError, SimpleCookie
from urllib.parse import unquote, urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import task
from twisted.logger import Logger
from twisted.web import http

from vncproxy.audit import audit
from vncproxy.closecodes import REASONS, CloseCode
from vncproxy.serial.session import SerialRefused, SerialSession
from vncproxy.sessions import LimitReached, peer_host
from vncproxy.tokens import TokenRejected
from vncproxy.vnc import VncSession
from vncproxy.zerocopy import websocket_header

_INSTANCE_PATH = re.compile(r"/v1/instances/([^/]+)/console")
MAX_MESSAGE = 1024 * 1024
#: Seconds a viewer has to answer our close frame before its connection is dropped.
CLOSE_HANDSHAKE_TIMEOUT = 5
_CODE_BY_REASON = {reason: code for code, reason in REASONS.items()}
_NO_CONSOLE_HERE = "no console at this path"
_INTERNAL_ERROR = "internal error"
#: The refusal reasons we write ourselves (never a secret); any other comes from Autobahn.
_OWN_REASONS = set(REASONS.values()) | {_NO_CONSOLE_HERE, _INTERNAL_ERROR}


def _default_port(scheme):
    return {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)


def _origin_key(url):
    """
    (scheme, host, port) of an origin or URL, with the scheme's default port filled in, or
    C{None} when it cannot be parsed.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or _default_port(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return scheme, parts.hostname.lower(), port


def origin_allowed(origin, host_header, config, secure):
    """
    Whether a browser at C{origin} may open a console.

    Allowed: no Origin header at all (not a browser: websocat, native tools; cross-site
    WebSocket hijacking needs a browser, and browsers always send Origin); the origin this
    listener is reached at (the request's Host); the configured C{public_url}; and each entry
    of C{allowed_origins} (a full origin, a bare host name, or C{*}).
    """
    if origin is None:
        return True
    key = _origin_key(origin)
    if key is None:
        return False
    scheme = "https" if secure else "http"
    if host_header and key == _origin_key(f"{scheme}://{host_header}"):
        return True
    if key == _origin_key(config.console_base_url):
        return True
    for allowed in config.allowed_origins:
        if allowed == "*":
            return True
        if "://" in allowed:
            if key == _origin_key(allowed):
                return True
        elif key[1] == allowed.lower():
            return True
    return False


def _token_from(request):
    for name in ("access_token", "token"):
        values = request.params.get(name)
        if values:
            return values[0]
    cookie_header = request.headers.get("cookie")
    if cookie_header:
        try:
            cookie = SimpleCookie(cookie_header)
        except CookieError:
            return None
        if "token" in cookie:
            return cookie["token"].value
    return None


class ConsoleServerProtocol(WebSocketServerProtocol):
    """
    One viewer's WebSocket. Autobahn owns C{self.log}; ours is C{_log}.
    """

    _log = Logger()

    def __init__(self):
        super().__init__()
        self._session = None
        self._grant = None

    # Twisted web registered its HTTP channel as the TCP transport's producer; the channel is
    # gone once Autobahn takes the transport over, and we register our own producers later.
    def connectionMade(self):
        super().connectionMade()
        self.factory.connections.add(self)
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()

    def connectionLost(self, reason):
        self.factory.connections.discard(self)
        super().connectionLost(reason)

    def onConnect(self, request):
        try:
            return self._admit(request)
        except ConnectionDeny:
            raise
        except Exception:
            self._log.failure("refusing a console connection after an unexpected error")
            raise ConnectionDeny(500, _INTERNAL_ERROR) from None

    def _refuse(self, request, close_code, status, detail=None, delay=0.0):
        """
        Refuse before the upgrade: HTTP C{status} with a JSON body naming C{close_code}; audited
        and counted. With a C{delay}, the answer comes that much later (rate limiting).
        """
        reason = REASONS[close_code]
        ctx = self.factory.ctx
        ctx.metrics.refused(reason.replace(" ", "_"))
        audit("refusal", peer=request.peer, reason=f"{reason}: {detail}" if detail else reason)
        deny = ConnectionDeny(status, reason)
        if delay <= 0:
            raise deny

        def later():
            raise deny

        return task.deferLater(ctx.reactor, delay, later)

    def _admit(self, request):
        ctx = self.factory.ctx
        source = peer_host(request.peer)
        path_instance = None
        match = _INSTANCE_PATH.fullmatch(request.path)
        if match:
            path_instance = unquote(match.group(1))
        elif request.path not in ("/", "/websockify"):
            raise ConnectionDeny(404, _NO_CONSOLE_HERE)
        if ctx.limiter.blocked(source):
            return self._refuse(request, CloseCode.RATE_LIMITED, 429)
        origin = request.headers.get("origin")
        if not origin_allowed(origin, request.headers.get("host"), ctx.config,
                              self.factory.isSecure):
            return self._refuse(request, CloseCode.ORIGIN_REFUSED, 403, f"origin {origin!r}")
        try:
            grant = ctx.tokens.consume(_token_from(request))
        except TokenRejected as e:
            return self._refuse(request, CloseCode.TOKEN_INVALID, 401, str(e),
                                delay=ctx.limiter.failed(source))
        if path_instance is not None and path_instance not in (grant.instance_uuid,
                                                               grant.instance_name):
            return self._refuse(request, CloseCode.TOKEN_INVALID, 401,
                                f"token {grant.id} is for another instance",
                                delay=ctx.limiter.failed(source))
        if grant.console_type == "serial":
            return self._admit_serial(request, grant)
        session = VncSession(ctx, grant, _WebSocketViewer(self), request.peer)
        try:
            ctx.sessions.admit(grant.instance_uuid, "vnc", session, "websocket")
        except LimitReached as e:
            ctx.tokens.release(grant, resumable=True, session_started_at=grant.session_started_at)
            return self._refuse(request, CloseCode.LIMIT_REACHED, 409, str(e))
        self._session = session
        return "binary" if "binary" in request.protocols else None

    def _admit_serial(self, request, grant):
        ctx = self.factory.ctx
        session = SerialSession(ctx, grant, _WebSocketViewer(self), request.peer)
        try:
            session.admit("websocket")
        except SerialRefused as e:
            ctx.tokens.release(grant, resumable=True, session_started_at=grant.session_started_at)
            return self._refuse(request, e.close_code, e.status, e.message)
        self._session = session
        return "binary" if "binary" in request.protocols else None

    def failHandshake(self, reason, code=400, responseHeaders=None):
        # Autobahn's version logs the reason, which for its own checks quotes the request line
        # or a header (a token may be in either). Ours are audited already; theirs get a line
        # without the quote.
        self.wasNotCleanReason = reason if reason in _OWN_REASONS else "malformed handshake"
        if reason not in _OWN_REASONS:
            self._log.info("refused a malformed WebSocket handshake from {peer} ({status})",
                           peer=self.peer, status=code)
        self.sendHttpErrorResponse(code, reason, responseHeaders)
        self.dropConnection(abort=False)

    def sendHttpErrorResponse(self, code, reason, responseHeaders=None):
        # Autobahn sends a bare status line; ours carries the contract's JSON error, with the
        # close code a UI can map to a message. Autobahn's own handshake failures quote the
        # offending header or URL, which may hold a token: those get the status's plain phrase.
        if reason not in _OWN_REASONS:
            reason = http.RESPONSES.get(code, b"Bad Request").decode("ascii")
        error = {"code": code, "message": reason}
        close_code = _CODE_BY_REASON.get(reason)
        if close_code is not None:
            error["close_code"] = int(close_code)
        body = json.dumps({"error": error}).encode("utf-8")
        head = [f"HTTP/1.1 {code} {reason}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close"]
        head += [f"{name}: {value}" for name, value in responseHeaders or ()]
        self.sendData(("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body)

    def onOpen(self):
        if self._session is not None:
            self._session.start()

    # Autobahn's streaming receive (its frame-level API): each piece of a data frame goes to
    # the session as it arrives. The console is a byte stream, so message boundaries mean
    # nothing to it, and skipping the per-message assembly, join and event dispatch halves the
    # service's CPU per keystroke. Size limits still hold: Autobahn checks each frame's length
    # against them in onMessageFrameBegin, from the frame header, before any payload.
    def onMessageFrameData(self, payload):
        if self._session is not None and payload and not self.failedByMe:
            self._session.viewer_data(payload)

    def onMessageFrameEnd(self):
        pass

    def onMessageEnd(self):
        pass

    # Autobahn's dataReceived and sendData each log a debug line whose arguments (hltype,
    # hlval: qualified names, string styling) are built before the logger can discard them,
    # on every read and every write. The relay's path skips those lines; anything unusual
    # (Autobahn's send queue, sync or chopped sends, octet logging, a closing connection)
    # still goes through Autobahn's sendData.
    def dataReceived(self, data):
        self._dataReceived(data)

    def sendData(self, data, sync=False, chopsize=None):
        if (sync or chopsize or self.send_queue or self.logOctets
                or self.state != WebSocketServerProtocol.STATE_OPEN):
            super().sendData(data, sync, chopsize)
            return
        self.transport.write(data)
        self.trafficStats.outgoingOctetsWireLevel += len(data)

    def onClose(self, wasClean, code, reason):
        if self._session is not None:
            session, self._session = self._session, None
            # Dropped without a close from the user (network blip, or 1001 "going away" on a
            # page reload): the token may reopen the console within the reconnect grace.
            session.viewer_lost(resumable=not wasClean or code == 1001)


class _WebSocketViewer:
    """
    Adapts a L{ConsoleServerProtocol} to the viewer shape that L{VncSession} drives.
    """

    def __init__(self, protocol):
        self._protocol = protocol

    @property
    def network_transport(self):
        return self._protocol.transport

    def send(self, data):
        if data and self._protocol.state == WebSocketServerProtocol.STATE_OPEN:
            self._protocol.sendMessage(data, isBinary=True)

    def splice_ready(self):
        """
        Whether a frame we write ourselves may go now (vncproxy.zerocopy): the WebSocket is
        open and Autobahn is not in the middle of sending anything.
        """
        protocol = self._protocol
        return (protocol.state == WebSocketServerProtocol.STATE_OPEN
                and protocol.send_state == WebSocketServerProtocol.SEND_STATE_GROUND
                and not protocol.send_queue)

    splice_header = staticmethod(websocket_header)

    def send_chunk(self, chunk):
        """
        Send a serial hub chunk, framed once for all viewers (an Autobahn prepared message kept
        in the chunk).
        """
        protocol = self._protocol
        if protocol.state == WebSocketServerProtocol.STATE_OPEN:
            if chunk.cache is None:
                chunk.cache = protocol.factory.prepareMessage(chunk.data, isBinary=True)
            protocol.sendPreparedMessage(chunk.cache)

    def close(self, code, reason):
        protocol = self._protocol
        protocol._session = None  # we are the ones closing: no viewer_lost() echo
        if protocol.state == WebSocketServerProtocol.STATE_OPEN:
            # read again (the session may have paused us) so the viewer's close reply is seen
            protocol.transport.resumeProducing()
            protocol.sendClose(int(code), reason)
        elif protocol.transport is not None:
            protocol.transport.loseConnection()

    def pause_reading(self):
        self._protocol.transport.pauseProducing()

    def resume_reading(self):
        self._protocol.transport.resumeProducing()


def make_factory(ctx, secure=False):
    """
    The WebSocket factory of the console listener.
    """
    # Autobahn derives isSecure from the URL; the host part is unused (externalPort unset).
    factory = WebSocketServerFactory("wss://localhost" if secure else None, server="consoleproxy")
    factory.protocol = ConsoleServerProtocol
    factory.ctx = ctx
    factory.connections = set()  # open WebSocket connections (the service waits for them on stop)
    factory.setProtocolOptions(
        maxFramePayloadSize=MAX_MESSAGE,
        maxMessagePayloadSize=MAX_MESSAGE,
        # A viewer over a bound (or breaking the protocol) gets a close frame with the code
        # (1009 message too big, 1002 protocol error), not a bare TCP drop.
        failByDrop=False,
        openHandshakeTimeout=15,
        closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
        autoPingInterval=30,
        autoPingTimeout=30,
    )
    return factory


__all__ = ["ConsoleServerProtocol", "make_factory", "origin_allowed"]
