"""
Ways to reach the benchmark backend, each ending with an RFB 3.8 viewer handshake (security
None, L{bench.rfbviewer}) so that what follows is the backend's command stream (see
L{bench.backend}):

    direct       TCP straight to the backend: the baseline
    bare         TCP relayed by a bare Python loop (L{bench.barerelay})
    websocket    consoleproxy's console listener: token, WebSocket upgrade, RFB from the proxy
    xvpvnc       consoleproxy's xvpvnc listener: CONNECT /console?token=T, then RFB
    websockify   the incumbent: a transparent WebSocket-to-TCP pipe, RFB from the backend
    serial       consoleproxy's serial console WebSocket: raw console bytes, no RFB (the soak)

Every target has a blocking client (L{SyncConn}: bulk, round trips, set-up time; the cheapest
client Python allows) and an asyncio one (L{AsyncConn}: hundreds of sessions at once), both in
L{bench.connections}. C{prepare()} does the untimed work (minting a token through the API,
L{bench.tokenapi}); C{connect(ticket)} and C{aconnect(ticket)} the timed part.
"""

from bench import wsframe
from bench.connections import AsyncConn, SyncConn
from bench.rfbviewer import RfbError, arfb_handshake, rfb_handshake
from bench.tokenapi import TokenApi


class Target:
    name = "?"
    host = "127.0.0.1"

    def prepare(self):
        return None

    def connect(self, ticket=None, rcvbuf=None):
        conn = SyncConn.open(self.host, self.port, rcvbuf=rcvbuf)
        self._upgrade(conn, ticket)
        conn.server_init = rfb_handshake(conn)
        return conn

    async def aconnect(self, ticket=None, rfb=True):
        """
        @param rfb: C{False} for a console that is a plain byte stream (serial): no RFB
            handshake after the upgrade.
        """
        conn = await AsyncConn.open(self.host, self.port)
        await self._aupgrade(conn, ticket)
        if rfb:
            conn.server_init = await arfb_handshake(conn)
        return conn

    def _upgrade(self, conn, ticket):
        pass

    async def _aupgrade(self, conn, ticket):
        pass


class DirectTarget(Target):
    name = "direct"

    def __init__(self, port):
        self.port = port


class BareRelayTarget(DirectTarget):
    """
    L{bench.barerelay}: raw TCP relayed by a bare Python loop (the floor for a Python relay).
    """

    name = "bare"


class _WebSocketTarget(Target):
    def _upgrade(self, conn, ticket):
        key = wsframe.new_key()
        conn.send(wsframe.handshake_request(f"{self.host}:{self.port}", self._path(ticket), key))
        wsframe.check_handshake_response(conn.read_head(), key)
        conn.start_websocket()

    async def _aupgrade(self, conn, ticket):
        key = wsframe.new_key()
        conn.write(wsframe.handshake_request(f"{self.host}:{self.port}", self._path(ticket), key))
        wsframe.check_handshake_response(await conn.read_head(), key)
        conn.start_websocket()


class _ProxyTarget(Target):
    """
    A consoleproxy listener (C{info}: the bench service's JSON line); each connection needs a
    token minted through the API.
    """

    listener = "?"  # the key of the listener's port in C{info}

    def __init__(self, info):
        self.port = info[self.listener]
        self._api = TokenApi(info["api_url"], info["key"], info["instance"])
        self._instances = info.get("instances") or [info["instance"]]

    def prepare(self):
        return self._api.mint()

    def prepare_many(self, count):
        """
        C{count} tokens, spread over the service's domains in turn.
        """
        instances = self._instances
        return [self._api.grant(instance=instances[i % len(instances)])["access_token"]
                for i in range(count)]


class ProxyWebSocketTarget(_ProxyTarget, _WebSocketTarget):
    name = "websocket"
    listener = "console_port"

    def _path(self, ticket):
        return f"/websockify?token={ticket or self._api.mint()}"


class WebsockifyTarget(_WebSocketTarget):
    """
    websockify with a token file naming the backend (its token is checked, never consumed).
    """

    name = "websockify"
    TOKEN = "bench"

    def __init__(self, port):
        self.port = port

    def _path(self, ticket):
        return f"/?token={self.TOKEN}"


class ProxyXvpTarget(_ProxyTarget):
    """
    The xvpvnc listener (docs/api.md): C{CONNECT /console?token=T HTTP/1.1}, a blank line,
    C{HTTP/1.1 200 OK} back, then RFB with security None.
    """

    name = "xvpvnc"
    listener = "xvpvnc_port"

    def _line(self, ticket):
        return f"CONNECT /console?token={ticket or self._api.mint()} HTTP/1.1\r\n\r\n".encode()

    @staticmethod
    def _check(head):
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RfbError(f"xvpvnc refused: {head.splitlines()[0]!r}")

    def _upgrade(self, conn, ticket):
        conn.send(self._line(ticket))
        self._check(conn.read_head())

    async def _aupgrade(self, conn, ticket):
        conn.write(self._line(ticket))
        self._check(await conn.read_head())


class SerialTarget(_WebSocketTarget):
    """
    A serial console viewer: the grant's C{href} path, then raw console bytes (no RFB).
    """

    name = "serial"

    def __init__(self, info):
        self.port = info["console_port"]

    def _path(self, ticket):
        return ticket

    async def aconnect(self, ticket=None):
        conn = await AsyncConn.open(self.host, self.port)
        await self._aupgrade(conn, ticket)
        return conn
