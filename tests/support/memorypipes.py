"""
Byte pipes over the in-memory network (tests/support/memorynet.py) with the interface of
tests/support/viewer.py's socket and WebSocket pipes (C{send}, C{recv}, C{close}), so the
independent RFB viewer there drives the in-memory service as it drives the real one.

A C{recv} with nothing to read waits as a blocking client does: the memory clock runs timer by
timer (L{tests.support.memory.MemoryProxy.wait_until}) until bytes or the close arrive, so a
time-out the service applies is exactly the clock time that passed.
"""

from twisted.internet.protocol import ClientFactory, Protocol

from tests.support.memorynet import HOST
from tests.support.viewer import PipeClosed


class _Client(Protocol):
    """Keeps what arrived and whether the connection was lost."""

    def __init__(self):
        self.received = b""
        self.lost = False

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost = True


class OneShot(ClientFactory):
    """A client factory whose connection is the one protocol instance given."""

    def __init__(self, protocol):
        self.instance = protocol

    def buildProtocol(self, addr):
        return self.instance


class TcpPipe:
    """A TCP client on one of the service's listeners (or any port the network serves)."""

    def __init__(self, proxy, port, source=None):
        self.proxy = proxy
        self.client = _Client()
        proxy.reactor.connectTCP(HOST, port, OneShot(self.client),
                                 bindAddress=(source, 0) if source else None)
        proxy.network.flush()

    def send(self, data):
        self.client.transport.write(data)
        self.proxy.network.flush()

    def recv(self):
        self.proxy.wait_until(lambda: self.client.received or self.client.lost)
        data, self.client.received = self.client.received, b""
        if not data:
            raise PipeClosed(None)
        return data

    def read_until(self, marker):
        """Everything up to and including C{marker} (or up to the close); the rest stays."""
        self.proxy.wait_until(lambda: marker in self.client.received or self.client.lost)
        head, found, rest = self.client.received.partition(marker)
        self.client.received = rest
        return head + found

    def read_all(self):
        """Everything until the server closes the connection."""
        self.proxy.wait_until(lambda: self.client.lost)
        data, self.client.received = self.client.received, b""
        return data

    def close(self):
        self.client.transport.loseConnection()
        self.proxy.network.flush()


class WebSocketPipe:
    """Binary messages of an in-memory Autobahn viewer (L{tests.support.memory.WebSocketViewer})."""

    def __init__(self, proxy, viewer):
        self.proxy = proxy
        self.viewer = viewer

    def send(self, data):
        self.viewer.sendMessage(data, isBinary=True)
        self.proxy.network.flush()

    def recv(self):
        viewer = self.viewer
        self.proxy.wait_until(lambda: viewer.received or viewer.closed is not None)
        data, viewer.received = viewer.received, b""
        if not data:
            raise PipeClosed(viewer.closed)
        return data

    def close(self):
        self.viewer.sendClose()
        self.proxy.network.flush()
