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

import ipaddress
import json
import re
from http.cookies import CookieError, SimpleCookie
from urllib.parse import unquote, urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import task
from twisted.logger import Logger
from twisted.web import http
from zope.interface import implementer

from vncproxy import relay
from vncproxy.admission import CONSOLE, Refusal
from vncproxy.clientaddr import client_address, peer_host
from vncproxy.closecodes import REASONS, CloseCode
from vncproxy.grants import credential
from vncproxy.interfaces import ISerialViewer
from vncproxy.nodelay import no_delay
from vncproxy.relay.wsframes import websocket_header
from vncproxy.relay.wsprotocol import FastWebSocketMixin
from vncproxy.serial.session import SerialSession
from vncproxy.vnc import VncSession
from vncproxy.web.errors import ApiError, error_document, family_of

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


def origin_allowed(origin, local, config, secure):
    """
    Whether a browser at C{origin} may open a console. The rule (docs/security.md, "Origin
    check"), compared as (scheme, host, port) with default ports filled in:

    - no Origin header at all: allowed (not a browser: websocat, native tools; cross-site
      WebSocket hijacking needs a browser, and browsers always send Origin);
    - the address the connection arrived at (C{local}: the listener's IP address and port,
      with C{http} or C{https} as the listener speaks), and C{localhost} on that port when the
      address is a loopback one;
    - C{public_url} (or the URL derived from the console listener when it is unset);
    - each entry of C{allowed_origins}: a full origin matches exactly; a bare host name
      C{H} stands for C{https://H} on port 443 only; C{*} allows any origin.

    The request's C{Host} header is not consulted: a page on a rebound DNS name
    (C{http://attacker.example:6080} resolving to this host) sends that name as both Origin
    and Host, and must not pass.

    @param local: the L{IAddress} of our end of the connection, or C{None}.
    """
    if origin is None:
        return True
    key = _origin_key(origin)
    if key is None:
        return False
    scheme = "https" if secure else "http"
    host, port = getattr(local, "host", None), getattr(local, "port", None)
    if host is not None and port is not None:
        if key == (scheme, host.lower(), port):
            return True
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback and key == (scheme, "localhost", port):
            return True
    if key == _origin_key(config.console_base_url):
        return True
    for allowed in config.allowed_origins:
        if allowed == "*":
            return True
        if "://" in allowed:
            if key == _origin_key(allowed):
                return True
        elif key == ("https", allowed.lower(), 443):
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


class ConsoleServerProtocol(FastWebSocketMixin, WebSocketServerProtocol):
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
        relay.write_through(self.factory.ctx.fast_paths, self.transport)
        no_delay(self.transport)

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

    def _refuse(self, request, refusal, source=None):
        """
        Refuse before the upgrade: HTTP status with a JSON body naming the close code; audited
        and counted. With a delay, the answer comes that much later (rate limiting).
        """
        ctx = self.factory.ctx
        ctx.admission.record(self._peer(request, source), refusal)
        deny = ConnectionDeny(refusal.status, refusal.reason)
        if refusal.delay <= 0:
            raise deny

        def later():
            raise deny

        return task.deferLater(ctx.reactor, refusal.delay, later)

    def _client(self, request):
        """
        The real client's address (L{vncproxy.clientaddr}): forwarding headers count only from
        a trusted proxy.
        """
        headers = request.headers  # Autobahn joins repeated headers with ", "
        return client_address(request.peer, [headers.get("forwarded", "")],
                              [headers.get("x-forwarded-for", "")], self.factory.ctx.trusted)

    def _peer(self, request, client=None):
        """
        The client as the audit and the session name it: Autobahn's peer string
        (C{tcp4:1.2.3.4:5678}), or the forwarded client's address behind a trusted proxy.

        @param client: L{_client}'s answer, when the caller has it already.
        """
        client = client or self._client(request)
        return request.peer if client == peer_host(request.peer) else client

    def _admit(self, request):
        ctx = self.factory.ctx
        path_instance = None
        match = _INSTANCE_PATH.fullmatch(request.path)
        if match:
            path_instance = unquote(match.group(1))
        elif request.path not in ("/", "/websockify"):
            raise ConnectionDeny(404, _NO_CONSOLE_HERE)
        source = self._client(request)
        origin = request.headers.get("origin")
        if not ctx.limiter.blocked(source) and not origin_allowed(
                origin, self.transport.getHost(), ctx.config, self.factory.isSecure):
            return self._refuse(request, Refusal(CloseCode.ORIGIN_REFUSED, 403,
                                                 f"origin {origin!r}"), source)
        outcome = ctx.admission.admit(
            source, credential(ctx, _token_from(request), path_instance), CONSOLE,
            lambda grant: self._open_session(grant, self._peer(request, source)))
        if isinstance(outcome, Refusal):
            return self._refuse(request, outcome, source)
        self._session = outcome.session
        return "binary" if "binary" in request.protocols else None

    def _open_session(self, grant, peer):
        session = SerialSession if grant.console_type == "serial" else VncSession
        return session(self.factory.ctx, grant, WebSocketViewer(self), peer)

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
        # The body is in the format of the path's API family (IBM's for /v1/..., Nova's for the
        # URLs Nova hands out), like the token API's errors.
        if reason not in _OWN_REASONS:
            reason = http.RESPONSES.get(code, b"Bad Request").decode("ascii")
        path = getattr(self, "http_request_path", "")
        trace, document = error_document(ApiError(code, reason, _CODE_BY_REASON.get(reason)),
                                         family_of(path))
        body = json.dumps(document).encode("utf-8")
        head = [f"HTTP/1.1 {code} {reason}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close",
                f"X-Request-Id: {trace}"]
        head += [f"{name}: {value}" for name, value in responseHeaders or ()]
        self.sendData(("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body)

    def onOpen(self):
        super().onOpen()  # the receive fast path starts (vncproxy.relay.wsprotocol)
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

    # dataReceived and sendData: the WebSocket fast paths (vncproxy.relay.wsprotocol).

    def onClose(self, wasClean, code, reason):
        if self._session is not None:
            session, self._session = self._session, None
            # Dropped without a close from the user (network blip, or 1001 "going away" on a
            # page reload): the token may reopen the console within the reconnect grace.
            session.viewer_lost(resumable=not wasClean or code == 1001)


@implementer(ISerialViewer)
class WebSocketViewer:
    """
    A L{ConsoleServerProtocol} as the viewer that a L{VncSession} or a L{SerialSession} drives.
    """

    listener = "websocket"  # its name in the session inventory

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
        Whether a frame we write ourselves may go now (vncproxy.relay.zerocopy): the WebSocket is
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


def server_factory(ctx, protocol, secure=False):
    """
    An Autobahn server factory as every WebSocket listener of ours uses it (the console's, the
    LXD API's): our reactor, its timers included; the message bounds; close frames with codes;
    the handshake timeouts and auto-ping.
    """
    # Autobahn derives isSecure from the URL; the host part is unused (externalPort unset).
    factory = WebSocketServerFactory("wss://localhost" if secure else None, server="consoleproxy",
                                     reactor=ctx.reactor)
    relay.use_reactor_timers(factory, ctx.reactor)
    factory.protocol = protocol
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


def make_factory(ctx, secure=False):
    """
    The WebSocket factory of the console listener, with its fast paths.
    """
    factory = server_factory(ctx, ConsoleServerProtocol, secure)
    relay.tune_websocket(factory, ctx.reactor, ctx.fast_paths)
    return factory


__all__ = ["ConsoleServerProtocol", "make_factory", "origin_allowed", "server_factory"]
