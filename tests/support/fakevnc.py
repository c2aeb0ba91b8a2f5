"""
A fake VNC server (standing in for QEMU in in-process tests), built on the proxy's own RFB
server machine with VNC Authentication; it answers framebuffer requests with a fixed pattern and
records what the proxy sent (the ClientInit shared flag, client messages).
"""

import struct

from twisted.internet.protocol import Factory, Protocol

from vncproxy.rfb import AuthResponse, ClientInitReceived, DownstreamHandshake, HandshakeFailed
from vncproxy.rfb.vncauth import check_response

WIDTH, HEIGHT = 32, 16
PIXEL_FORMAT = struct.pack("!BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)


def pattern():
    return bytes((i * 7) % 251 for i in range(WIDTH * HEIGHT * 4))


class FakeVncServer(Protocol):
    def connectionMade(self):
        f = self.factory
        f.connections.append(self)
        self.shared = None
        self.received = b""
        self.done = False
        self.machine = DownstreamHandshake(auth="vnc" if f.password else "none")
        self.machine.initiate()
        self.transport.write(self.machine.data_to_send())

    def dataReceived(self, data):
        if self.done:
            self.received += data
            self._serve()
            return
        events = self.machine.receive_data(data)
        for event in events:
            if isinstance(event, AuthResponse):
                if check_response(self.factory.password, event.challenge, event.response):
                    events += self.machine.accept()
                else:
                    events += self.machine.reject("Authentication failed")
        self.transport.write(self.machine.data_to_send())
        for event in events:
            if isinstance(event, ClientInitReceived):
                self.done = True
                self.shared = event.shared
                name = self.factory.name.encode()
                self.transport.write(struct.pack("!HH", WIDTH, HEIGHT) + PIXEL_FORMAT
                                     + struct.pack("!I", len(name)) + name)
                self.received += event.leftover
                self._serve()
            elif isinstance(event, HandshakeFailed):
                self.factory.failures.append(event.reason)
                self.transport.loseConnection()

    def _serve(self):
        while self.received:
            kind = self.received[0]
            size = {0: 20, 3: 10, 4: 8, 5: 6}.get(kind)
            if kind == 2:
                if len(self.received) < 4:
                    return
                size = 4 + 4 * struct.unpack("!H", self.received[2:4])[0]
            if size is None or len(self.received) < size:
                return
            message, self.received = self.received[:size], self.received[size:]
            self.factory.messages.append(message)
            if kind == 3:
                self.transport.write(struct.pack("!BxH", 0, 1)
                                     + struct.pack("!HHHHi", 0, 0, WIDTH, HEIGHT, 0) + pattern())

    def connectionLost(self, reason):
        self.factory.connections.remove(self)


class FakeVncFactory(Factory):
    protocol = FakeVncServer

    def __init__(self, password=b"secret1", name="fake vm"):
        self.password = password
        self.name = name
        self.connections = []
        self.messages = []
        self.failures = []
