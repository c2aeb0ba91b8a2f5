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

import re
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger

from vncproxy.closecodes import CloseCode
from vncproxy.serial.session import SerialRefused, SerialSession
from vncproxy.sessions import LimitReached
from vncproxy.tokens import TokenRejected
from vncproxy.vnc import VncSession

_INSTANCE_PATH = re.compile(r"/v1/instances/([^/]+)/console")
MAX_MESSAGE = 1024 * 1024


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
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()

    def onConnect(self, request):
        try:
            return self._admit(request)
        except ConnectionDeny:
            raise
        except Exception:
            self._log.failure("refusing a console connection after an unexpected error")
            raise ConnectionDeny(500, "internal error") from None

    def _admit(self, request):
        ctx = self.factory.ctx
        peer = request.peer
        path_instance = None
        match = _INSTANCE_PATH.fullmatch(request.path)
        if match:
            path_instance = match.group(1)
        elif request.path not in ("/", "/websockify"):
            raise ConnectionDeny(404, "no console at this path")
        origin = request.headers.get("origin")
        if not origin_allowed(origin, request.headers.get("host"), ctx.config,
                              self.factory.isSecure):
            self._log.info("refused console connection from {peer}: origin not allowed",
                           peer=peer, event="refusal", reason="origin refused")
            raise ConnectionDeny(403, "origin refused")
        try:
            grant = ctx.tokens.consume(_token_from(request))
        except TokenRejected as e:
            self._log.info("refused console connection from {peer}: {reason}",
                           peer=peer, reason=str(e), event="refusal")
            raise ConnectionDeny(401, "token invalid") from None
        if path_instance is not None and path_instance not in (grant.instance_uuid,
                                                               grant.instance_name):
            self._log.info("refused console connection from {peer}: token {grant_id} is for "
                           "another instance", peer=peer, grant_id=grant.id, event="refusal")
            raise ConnectionDeny(401, "token invalid")
        if grant.console_type == "serial":
            return self._admit_serial(ctx, grant, peer, request)
        self._session = VncSession(ctx, grant, _WebSocketViewer(self), peer)
        try:
            ctx.sessions.admit(grant.instance_uuid, "vnc", self._session)
        except LimitReached as e:
            self._session = None
            self._log.info("refused console connection from {peer}: {reason}",
                           peer=peer, reason=str(e), event="refusal")
            raise ConnectionDeny(409, "limit reached") from None
        self._grant = grant
        return "binary" if "binary" in request.protocols else None

    def _admit_serial(self, ctx, grant, peer, request):
        session = SerialSession(ctx, grant, _WebSocketViewer(self), peer)
        try:
            session.admit()
        except SerialRefused as e:
            self._log.info("refused serial connection from {peer}: {reason}",
                           peer=peer, reason=e.message, event="refusal")
            raise ConnectionDeny(e.status, e.message) from None
        self._session = session
        self._grant = grant
        return "binary" if "binary" in request.protocols else None

    def onOpen(self):
        if self._session is not None:
            self._session.start()

    def onMessage(self, payload, isBinary):
        if self._session is not None:
            self._session.viewer_data(payload)

    def onClose(self, wasClean, code, reason):
        if self._session is not None:
            session, self._session = self._session, None
            session.viewer_lost()


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
    factory.setProtocolOptions(
        maxFramePayloadSize=MAX_MESSAGE,
        maxMessagePayloadSize=MAX_MESSAGE,
        openHandshakeTimeout=15,
        closeHandshakeTimeout=5,
        autoPingInterval=30,
        autoPingTimeout=30,
    )
    return factory


__all__ = ["CloseCode", "ConsoleServerProtocol", "make_factory", "origin_allowed"]
