"""
The benchmark's stand-in for QEMU's VNC server: a small, fast asyncio RFB server.

It greets with RFB 3.8, offers security None (3.3/3.7 clients are served too), answers
ClientInit with a ServerInit, then obeys one-byte commands from its client::

    S <u64 n>     stream n bytes (byte i of a stream is i % 256), then wait for a command
    E             echo every byte that follows, for the rest of the connection
    R <u32 rate>  read and discard at most rate bytes per second, for the rest of the connection
    U <u64 n>     read and discard n bytes (an upload), answer "D", then wait for a command
    (nothing)     stay idle

Through the proxy the commands are ordinary client-to-server bytes (the relay passes bytes
unchanged after the handshake), so the same backend serves direct, proxied and websockify runs.
With C{--report}, one JSON line per closed connection goes to stdout: C{{"sent": n,
"received": n}} (bytes after the handshake).

Run: C{python -m bench.backend [--port 0] [--report]}; the first line of stdout is the port.
"""

import argparse
import asyncio
import json
import socket
import struct
import sys

PIXEL_FORMAT = struct.pack("!BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
NAME = b"bench backend"
SERVER_INIT = struct.pack("!HH", 1024, 768) + PIXEL_FORMAT + struct.pack("!I", len(NAME)) + NAME
CHUNK = bytes(range(256)) * 1024  # 256 KiB; a multiple of 256 keeps the i % 256 pattern

_VERSION, _SECURITY, _CLIENT_INIT, _COMMAND, _ECHO, _SINK, _UPLOAD = range(7)


class RfbBackend(asyncio.Protocol):
    def __init__(self, report=None):
        self._report = report
        self._state = _VERSION
        self._buf = b""
        self._minor = 8
        self._left = 0  # bytes still to stream
        self._paused = False
        self._rate = 0
        self.sent = 0
        self.received = 0

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=1024 * 1024)
        transport.write(b"RFB 003.008\n")

    def data_received(self, data):
        state = self._state
        if state == _ECHO:
            self.received += len(data)
            self.sent += len(data)
            self.transport.write(data)
            return
        if state == _SINK:
            self._sink(len(data))
            return
        if state == _UPLOAD:
            self.received += len(data)
            if len(data) < self._left:
                self._left -= len(data)
                return
            data, self._left = data[self._left:], 0
            self._state = _COMMAND
            self.transport.write(b"D")
            if not data:
                return
        if state == _COMMAND:
            self.received += len(data)
        self._buf += data
        while self._buf and self._state not in (_ECHO, _SINK):
            if not self._step():
                return
        if self._state == _ECHO and self._buf:
            rest, self._buf = self._buf, b""
            self.sent += len(rest)
            self.transport.write(rest)
        elif self._state == _SINK and self._buf:
            rest, self._buf = self._buf, b""
            self._sink(len(rest))

    def _step(self):
        """
        Consume one handshake message or command from the buffer; False when incomplete.
        """
        buf = self._buf
        if self._state == _VERSION:
            if len(buf) < 12:
                return False
            minor = buf[8:11]
            self._minor = int(minor) if minor.isdigit() else 8
            self._buf = buf[12:]
            if self._minor <= 3:
                self.transport.write(struct.pack("!I", 1))
                self._state = _CLIENT_INIT
            else:
                self.transport.write(b"\x01\x01")
                self._state = _SECURITY
        elif self._state == _SECURITY:
            self._buf = buf[1:]
            if buf[0] != 1:
                self.transport.close()
                return False
            if self._minor >= 8:
                self.transport.write(b"\x00\x00\x00\x00")
            self._state = _CLIENT_INIT
        elif self._state == _CLIENT_INIT:
            self._buf = buf[1:]
            self.transport.write(SERVER_INIT)
            self._state = _COMMAND
            self.received = len(self._buf)
        elif self._state == _COMMAND:
            command = buf[:1]
            if command == b"E":
                self._buf = buf[1:]
                self._state = _ECHO
            elif command == b"S":
                if len(buf) < 9:
                    return False
                self._left = struct.unpack("!Q", buf[1:9])[0]
                self._buf = buf[9:]
                self._stream()
            elif command == b"U":
                if len(buf) < 9:
                    return False
                self._left = struct.unpack("!Q", buf[1:9])[0]
                self._buf = buf[9:]
                self._state = _UPLOAD
                if self._buf:
                    rest, self._buf = self._buf, b""
                    self.data_received(rest)
                    self.received -= len(rest)  # counted twice otherwise
            elif command == b"R":
                if len(buf) < 5:
                    return False
                self._rate = struct.unpack("!I", buf[1:5])[0]
                self._buf = buf[5:]
                self._state = _SINK
                # A small receive buffer makes each read small, so pausing paces the reader.
                sock = self.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            else:
                self.transport.close()
                return False
        return True

    # -- streaming -------------------------------------------------------------------------------

    def _stream(self):
        write = self.transport.write
        while self._left and not self._paused:
            if self._left >= len(CHUNK):
                write(CHUNK)
                n = len(CHUNK)
            else:
                n = self._left
                write(CHUNK[:n])
            self._left -= n
            self.sent += n

    def pause_writing(self):
        self._paused = True

    def resume_writing(self):
        self._paused = False
        self._stream()

    # -- slow reading ----------------------------------------------------------------------------

    def _sink(self, n):
        self.received += n
        if self._rate and n:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(n / self._rate, self._resume_sink)

    def _resume_sink(self):
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc):
        if self._report is not None:
            self._report({"sent": self.sent, "received": self.received})


async def serve(host="127.0.0.1", port=0, report=False):
    """
    Start listening; return the asyncio server.
    """
    def emit(record):
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()

    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: RfbBackend(emit if report else None), host, port,
                                    backlog=4096)


async def _main(args):
    server = await serve(args.host, args.port, args.report)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--report", action="store_true",
                        help="print sent/received bytes of each connection when it closes")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
