"""
Ways to reach the benchmark backend, each ending with an RFB 3.8 viewer handshake (security
None) so that what follows is the backend's command stream (see L{bench.backend}):

    direct       TCP straight to the backend: the baseline
    websocket    consoleproxy's console listener: token, WebSocket upgrade, RFB from the proxy
    xvpvnc       consoleproxy's xvpvnc listener: CONNECT /console?token=T, then RFB
    websockify   the incumbent: a transparent WebSocket-to-TCP pipe, RFB from the backend

Every target has a blocking client (L{SyncConn}: bulk, round trips, set-up time; the cheapest
client Python allows) and an asyncio one (L{AsyncConn}: hundreds of sessions at once).
C{prepare()} does the untimed work (minting a token through the API); C{connect(ticket)} and
C{aconnect(ticket)} the timed part.
"""

import asyncio
import http.client
import json
import socket
import struct

from bench import wsframe

RECV_SIZE = 1024 * 1024


class Closed(Exception):
    """
    The far end closed (a WebSocket close frame, or EOF).
    """


class RfbError(Exception):
    """
    The RFB handshake failed.
    """


def _nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- RFB viewer handshake, written once for both clients ------------------------------------------

def _rfb_steps():
    """
    A generator driving the viewer side of RFB 3.8 with security None: it yields
    C{("read", n)} or C{("write", data)} and is sent the bytes read.
    """
    version = yield ("read", 12)
    if not version.startswith(b"RFB 003."):
        raise RfbError(f"not an RFB server: {version!r}")
    yield ("write", b"RFB 003.008\n")
    count = (yield ("read", 1))[0]
    if count == 0:
        length = struct.unpack("!I", (yield ("read", 4)))[0]
        raise RfbError("refused: " + (yield ("read", length)).decode("utf-8", "replace"))
    types = yield ("read", count)
    if 1 not in types:
        raise RfbError(f"security None not offered: {list(types)}")
    yield ("write", b"\x01")
    if (yield ("read", 4)) != b"\x00\x00\x00\x00":
        length = struct.unpack("!I", (yield ("read", 4)))[0]
        raise RfbError("security failed: " + (yield ("read", length)).decode("utf-8", "replace"))
    yield ("write", b"\x01")  # ClientInit, shared
    head = yield ("read", 24)
    name = yield ("read", struct.unpack("!I", head[20:24])[0])
    return head + name


def rfb_handshake(conn):
    steps = _rfb_steps()
    value = None
    try:
        while True:
            op, arg = steps.send(value)
            if op == "read":
                value = conn.recv_exactly(arg)
            else:
                conn.send(arg)
                value = None
    except StopIteration as done:
        return done.value


async def arfb_handshake(conn):
    steps = _rfb_steps()
    value = None
    try:
        while True:
            op, arg = steps.send(value)
            if op == "read":
                value = await conn.read_exactly(arg)
            else:
                conn.write(arg)
                value = None
    except StopIteration as done:
        return done.value


# -- blocking client ----------------------------------------------------------------------------

class SyncConn:
    """
    A blocking connection carrying raw bytes or WebSocket binary messages.
    """

    def __init__(self, sock):
        self.sock = sock
        self._decoder = None
        self._pending = bytearray()

    @classmethod
    def open(cls, host, port, timeout=30, rcvbuf=None):
        """
        @param rcvbuf: a receive buffer size to set before connecting (a slow reader's).
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((host, port))
        _nodelay(sock)
        return cls(sock)

    def read_head(self):
        """
        Read an HTTP response head (through the blank line); what follows stays pending.
        """
        while b"\r\n\r\n" not in self._pending:
            if len(self._pending) > 65536:
                raise RfbError("response head too long")
            self._fill_raw()
        head, _, rest = bytes(self._pending).partition(b"\r\n\r\n")
        self._pending = bytearray(rest)
        return head + b"\r\n\r\n"

    def start_websocket(self):
        self._decoder = wsframe.FrameDecoder()
        raw, self._pending = self._pending, bytearray()
        if raw:
            self._take(raw)

    def _fill_raw(self):
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise Closed("EOF")
        self._pending += data

    def _take(self, data):
        pieces, controls = self._decoder.feed(data)
        for piece in pieces:
            self._pending += piece
        self._control(controls)

    def _control(self, controls):
        for opcode, payload in controls:
            if opcode == wsframe.OP_PING:
                self.sock.sendall(wsframe.encode(payload, wsframe.OP_PONG))
            elif opcode == wsframe.OP_CLOSE:
                raise Closed("close frame %s %s" % wsframe.close_code(payload))

    @property
    def websocket(self):
        """
        Whether this connection carries WebSocket frames (after the upgrade).
        """
        return self._decoder is not None

    def send(self, data):
        if self._decoder is not None:
            data = wsframe.encode(data)
        self.sock.sendall(data)

    def recv_exactly(self, n):
        while len(self._pending) < n:
            if self._decoder is None:
                self._fill_raw()
            else:
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    raise Closed("EOF")
                self._take(data)
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    def recv_some(self, limit):
        """
        Read at most C{limit} bytes from the socket (one recv) and return the payload they
        complete, plus anything already pending (for a reader that paces itself).
        """
        if self._pending:
            out = bytes(self._pending)
            self._pending.clear()
            return out
        data = self.sock.recv(limit)
        if not data:
            raise Closed("EOF")
        if self._decoder is None:
            return data
        pieces, controls = self._decoder.feed(data)
        self._control(controls)
        return b"".join(pieces)

    def sink(self, n):
        """
        Receive and discard C{n} payload bytes as fast as possible.
        """
        got = len(self._pending)
        self._pending.clear()
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        recv_into = self.sock.recv_into
        decoder = self._decoder
        if decoder is None:
            while got < n:
                k = recv_into(buf)
                if not k:
                    raise Closed("EOF")
                got += k
        else:
            base = decoder.payload_bytes - got
            while decoder.payload_bytes - base < n:
                k = recv_into(buf)
                if not k:
                    raise Closed("EOF")
                _, controls = decoder.feed(view[:k])
                if controls:
                    self._control(controls)
            got = decoder.payload_bytes - base
        if got > n:
            raise RfbError(f"received {got - n} bytes more than the {n} expected")

    def close(self):
        try:
            if self._decoder is not None:
                self.sock.sendall(wsframe.encode_close())
        except OSError:
            pass
        self.sock.close()


# -- asyncio client -----------------------------------------------------------------------------

class AsyncConn(asyncio.Protocol):
    """
    The asyncio counterpart of L{SyncConn}.

    @ivar on_payload: when set (after the upgrade), called with each WebSocket payload piece (a
        memoryview, valid during the call) instead of buffering it: for a reader that only
        checks what it receives (the serial fan-out).
    """

    on_payload = None

    def __init__(self):
        self._buf = bytearray()
        self._decoder = None
        self._want = 0
        self._waiter = None
        self._error = None
        self._lost = None
        self.close_frame = None  # (code, reason) of the server's close frame, once received
        self.transport = None

    @classmethod
    async def open(cls, host, port):
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    def connection_made(self, transport):
        self.transport = transport
        self._lost = asyncio.get_running_loop().create_future()
        _nodelay(transport.get_extra_info("socket"))

    def data_received(self, data):
        if self._decoder is None:
            self._buf += data
        else:
            try:
                pieces, controls = self._decoder.feed(data)
            except wsframe.ProtocolError as e:
                self._fail(e)
                return
            if self.on_payload is not None:
                for piece in pieces:
                    self.on_payload(piece)
            else:
                for piece in pieces:
                    self._buf += piece
            for opcode, payload in controls:
                if opcode == wsframe.OP_PING:
                    self.transport.write(wsframe.encode(payload, wsframe.OP_PONG))
                elif opcode == wsframe.OP_CLOSE:
                    self.close_frame = wsframe.close_code(payload)
                    self._fail(Closed("close frame %s %s" % self.close_frame))
        self._wake()

    def _wake(self):
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (
                self._error is not None or self._ready()):
            waiter.set_result(None)

    def _ready(self):
        if self._want is None:
            return b"\r\n\r\n" in self._buf
        return len(self._buf) >= self._want

    def _fail(self, error):
        if self._error is None:
            self._error = error
        self._wake()

    def connection_lost(self, exc):
        self._fail(Closed(str(exc) if exc else "EOF"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    @property
    def error(self):
        """
        Why the connection cannot be read any more (a L{Closed}), or C{None} while it can.
        """
        return self._error

    async def wait_closed(self):
        """
        Wait until the connection is gone (both ways).
        """
        await asyncio.shield(self._lost)

    async def _wait(self, want):
        self._want = want
        while not self._ready():
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None

    async def read_head(self):
        await self._wait(None)
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf = bytearray(rest)
        return head + b"\r\n\r\n"

    def start_websocket(self):
        self._decoder = wsframe.FrameDecoder()
        raw, self._buf = self._buf, bytearray()
        if raw:
            self.data_received(bytes(raw))

    async def read_exactly(self, n):
        await self._wait(n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def write(self, data):
        if self._decoder is not None:
            data = wsframe.encode(data)
        self.transport.write(data)

    def close(self):
        if self.transport is not None and not self.transport.is_closing():
            if self._decoder is not None:
                self.transport.write(wsframe.encode_close())
            self.transport.close()


# -- targets ------------------------------------------------------------------------------------

class TokenApi:
    """
    Mints console tokens through the service's API (one kept-alive HTTP connection).
    """

    def __init__(self, api_url, key, instance):
        host, _, port = api_url.split("://", 1)[1].partition(":")
        self._host, self._port = host, int(port)
        self._key = key
        self._instance = instance
        self._http = None

    def mint(self, console_type="vnc", read_only=False):
        """
        A console token for this API's instance.
        """
        extra = {"read_only": True} if read_only else {}
        return self.grant(console_type=console_type, **extra)["access_token"]

    def grant(self, instance=None, console_type="vnc", **body):
        """
        The API's whole answer (C{access_token}, C{href}, ...) to a grant for C{instance}
        (default: this API's), with C{body}'s extra fields (C{read_only}, C{force}).

        @raise GrantRefused: when the API answers anything but 200.
        """
        body = json.dumps(dict(body, console_type=console_type))
        instance = instance or self._instance
        for attempt in (1, 2):
            if self._http is None:
                self._http = http.client.HTTPConnection(self._host, self._port, timeout=30)
            try:
                self._http.request("POST", f"/v1/instances/{instance}/console_access_token",
                                   body, {"X-Auth-Token": self._key,
                                          "Content-Type": "application/json"})
                response = self._http.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                self._http.close()
                self._http = None
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise GrantRefused(response.status, payload[:200])
            return json.loads(payload)

    def close(self):
        """
        Close the kept-alive connection (a later grant opens another).
        """
        if self._http is not None:
            self._http.close()
            self._http = None


class GrantRefused(RuntimeError):
    """
    The token API answered C{status} (not 200).
    """

    def __init__(self, status, payload):
        super().__init__(f"token API answered {status}: {payload!r}")
        self.status = status


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
