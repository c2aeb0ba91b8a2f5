"""
A bench client's connection to whatever it measures: raw bytes, or WebSocket binary messages
once upgraded (the frames are L{bench.wsframe}'s); the HTTP response head of an upgrade or a
CONNECT read first. Two forms with the same reading and writing calls:

    SyncConn    blocking: bulk, round trips, set-up time; the cheapest client Python allows
    AsyncConn   asyncio: hundreds of sessions at once in one process

Opening one and upgrading it is a target's job (L{bench.clients}).
"""

import asyncio
import socket

from bench import wsframe
from bench.rfbviewer import RfbError

RECV_SIZE = 1024 * 1024


class Closed(Exception):
    """
    The far end closed (a WebSocket close frame, or EOF).
    """


def _nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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

    def send_raw(self, wire):
        """
        Send bytes made by L{bench.wsframe.prepared}, as they are.
        """
        self.sock.sendall(wire)

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

    @property
    def websocket(self):
        """
        Whether this connection carries WebSocket frames (after the upgrade).
        """
        return self._decoder is not None

    def write_raw(self, wire):
        """
        Write bytes made by L{bench.wsframe.prepared}, as they are.
        """
        self.transport.write(wire)

    def close(self):
        if self.transport is not None and not self.transport.is_closing():
            if self._decoder is not None:
                self.transport.write(wsframe.encode_close())
            self.transport.close()

