"""
A small blocking RFB viewer for tests: speaks the client side of RFB 3.3/3.7/3.8 with security
None or VNC Authentication over any byte pipe (a WebSocket from websocket-client, or a plain
socket), reads ServerInit and framebuffer updates in Raw encoding. It is deliberately
independent of vncproxy.rfb, so that the proxy's machines are checked against a second
implementation.
"""

import socket
import struct
import warnings
from dataclasses import dataclass

import websocket
from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # cryptography < 43
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES


def des_response(password, challenge):
    """The VNC Authentication answer: DES-ECB with the bit-mirrored, NUL-padded password."""
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password[:8].ljust(8, b"\0"))
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


class RfbRefused(Exception):
    """The server refused the connection during the handshake (reason attached)."""


class PipeClosed(Exception):
    pass


class WebSocketPipe:
    def __init__(self, ws):
        self.ws = ws

    def send(self, data):
        self.ws.send_binary(data)

    def recv(self):
        opcode, data = self.ws.recv_data(control_frame=False)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise PipeClosed(close_status(data))
        return data

    def close(self):
        self.ws.close()


class SocketPipe:
    def __init__(self, sock):
        self.sock = sock

    def send(self, data):
        self.sock.sendall(data)

    def recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise PipeClosed(None)
        return data

    def close(self):
        self.sock.close()


def close_status(frame_payload):
    """(code, reason) of a close frame's payload."""
    if len(frame_payload) >= 2:
        return struct.unpack("!H", frame_payload[:2])[0], frame_payload[2:].decode("utf-8", "replace")
    return None, ""


def open_websocket(url, origin=None, subprotocols=None, cookie=None, timeout=20):
    """Open a WebSocket; raises websocket.WebSocketBadStatusException on an HTTP refusal."""
    return websocket.create_connection(
        url, timeout=timeout, origin=origin, subprotocols=subprotocols, cookie=cookie,
        suppress_origin=origin is None)


@dataclass
class ServerInit:
    width: int
    height: int
    bpp: int
    depth: int
    name: str


class RfbViewer:
    def __init__(self, pipe):
        self.pipe = pipe
        self._buf = b""
        self.server_init = None

    def read(self, n):
        while len(self._buf) < n:
            self._buf += self.pipe.recv()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _u32(self):
        return struct.unpack("!I", self.read(4))[0]

    def _reason(self):
        return self.read(self._u32()).decode("utf-8", "replace")

    def handshake(self, version=(3, 8), shared=False, password=None):
        """
        Run the client handshake up to ServerInit: security None, or VNC Authentication
        when C{password} (bytes) is given.

        @raise RfbRefused: when the server refuses (its reason attached).
        """
        server_version = self.read(12)
        if not server_version.startswith(b"RFB "):
            raise AssertionError(f"not an RFB server: {server_version!r}")
        self.pipe.send(b"RFB %03d.%03d\n" % version)
        wanted = 1 if password is None else 2
        if version == (3, 3):
            chosen = self._u32()
            if chosen == 0:
                raise RfbRefused(self._reason())
            if chosen != wanted:
                raise AssertionError(f"server chose security type {chosen}, not {wanted}")
        else:
            count = self.read(1)[0]
            if count == 0:
                raise RfbRefused(self._reason())
            types = self.read(count)
            if wanted not in types:
                raise AssertionError(f"security type {wanted} not offered: {list(types)}")
            self.pipe.send(bytes([wanted]))
        if password is not None:
            self.pipe.send(des_response(password, self.read(16)))
        if password is not None or version == (3, 8):
            result = self._u32()
            if result != 0:
                raise RfbRefused(self._reason() if version == (3, 8) else "")
        self.pipe.send(b"\x01" if shared else b"\x00")
        header = self.read(24)
        width, height, bpp, depth = struct.unpack("!HHBB", header[:6])
        name = self.read(struct.unpack("!I", header[20:24])[0]).decode("utf-8", "replace")
        self.server_init = ServerInit(width, height, bpp, depth, name)
        return self.server_init

    def framebuffer_update(self, incremental=False):
        """
        Ask for the whole screen in Raw encoding; return the pixel bytes of every Raw
        rectangle of the first FramebufferUpdate (after following DesktopSize changes).
        """
        si = self.server_init
        self.pipe.send(struct.pack("!BxHi", 2, 1, 0))  # SetEncodings: Raw only
        self.pipe.send(struct.pack("!BBHHHH", 3, int(incremental), 0, 0, si.width, si.height))
        while True:
            kind = self.read(1)[0]
            if kind == 0:
                break
            if kind == 2:  # Bell
                continue
            if kind == 3:  # ServerCutText
                self.read(3)
                self.read(self._u32())
                continue
            raise AssertionError(f"unexpected server message type {kind}")
        self.read(1)
        count = struct.unpack("!H", self.read(2))[0]
        pixels = []
        for _ in range(count):
            x, y, w, h, enc = struct.unpack("!HHHHi", self.read(12))
            if enc != 0:
                raise AssertionError(f"unexpected encoding {enc}")
            pixels.append(((x, y, w, h), self.read(w * h * si.bpp // 8)))
        return pixels


def connect_tcp(host, port, timeout=20, source=None):
    """
    @param source: the local address to connect from (e.g. 127.0.0.5: a distinct client).
    """
    address = (source, 0) if source else None
    return SocketPipe(socket.create_connection((host, port), timeout=timeout,
                                               source_address=address))


def xvp_connect(host, port, target, version="HTTP/1.0", headers=(), timeout=20):
    """
    Open an xvpvnc console the way Nova's Java xvp viewer does: send C{CONNECT target version},
    the header lines and a blank line, then read the response up to its blank line (byte by
    byte, so no RFB byte is consumed).

    @return: C{(response bytes, SocketPipe)}; the response is C{b""} if the server closed
        without one.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    request = f"CONNECT {target} {version}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    sock.sendall(request.encode("ascii"))
    response = b""
    while not response.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            break
        response += byte
    return response, SocketPipe(sock)


def until_closed(pipe):
    """
    Read from C{pipe} until it closes; return the close's (code, reason), or C{None} when there
    was none (a socket, or a WebSocket dropped without a close frame).
    """
    try:
        while True:
            pipe.recv()
    except PipeClosed as closed:
        return closed.args[0]
    except (websocket.WebSocketConnectionClosedException, ConnectionResetError):
        return None
