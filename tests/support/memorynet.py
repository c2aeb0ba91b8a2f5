"""
An in-memory network for tests on a L{MemoryReactorClock}: it plays the kernel, joining every
C{connectTCP} the reactor records to the factory listening on that port (or refusing it) and
moving bytes through C{iosim} transports until every connection is quiet. A transport that is
paused reads nothing: what is sent to it waits, as in a kernel's socket buffer, until it resumes.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.test import iosim

HOST = "127.0.0.1"
_CLIENT_PORTS = iter(range(40000, 60000))


def client_address(host=HOST):
    """A fresh client address (C{host}, ports counting up), as a kernel would pick one."""
    return IPv4Address("TCP", host, next(_CLIENT_PORTS))


class _Transport(iosim.FakeTransport):
    """An C{iosim} transport with the TCP socket options the proxy sets, whose reading pauses."""

    _paused = False
    _held = b""

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False

    def bufferReceived(self, buf):
        if not isinstance(buf, bytes):  # a TLS negotiation
            super().bufferReceived(buf)
            return
        self._held += buf
        self.deliver_held()

    def deliver_held(self):
        """Hand what waited to the protocol, unless paused; return whether anything moved."""
        if self._paused or not self._held:
            return False
        data, self._held = self._held, b""
        super().bufferReceived(data)
        return True

    @property
    def connected(self):
        """As a TCP transport's: true until the connection is lost."""
        return not self.disconnected

    def setTcpNoDelay(self, enabled):
        pass

    def setTcpKeepAlive(self, enabled):
        pass

    def abortConnection(self):
        self.loseConnection()


class MemoryNetwork:
    """
    Joins the connections a memory reactor records to the factories listening in memory, and
    pumps bytes between them.
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self.listeners = {}  # port -> factory
        self.pumps = []
        self._seen = 0
        self._claimed = set()  # connections Autobahn's memory agent joined itself

    def listen(self, port, factory):
        self.listeners[port] = factory

    def add(self, pump):
        """The Autobahn memory agent's C{IPumper} side: it joined a connection itself."""
        self.pumps.append(pump)
        port = pump.serverIO.getHost().port
        for index in range(self._seen, len(self.reactor.tcpClients)):
            if index not in self._claimed and self.reactor.tcpClients[index][1] == port:
                self._claimed.add(index)
                return

    def _join_new_connections(self):
        joined = False
        while self._seen < len(self.reactor.tcpClients):
            host, port, client_factory, _, bind = self.reactor.tcpClients[self._seen]
            connector = self.reactor.connectors[self._seen]
            self._seen += 1
            joined = True
            if self._seen - 1 in self._claimed:
                continue
            server_factory = self.listeners.get(port)
            if server_factory is None:
                client_factory.clientConnectionFailed(connector, _refused())
                continue
            client_side = client_address(bind[0] if bind and bind[0] else HOST)
            server_side = IPv4Address("TCP", host, port)
            server = server_factory.buildProtocol(client_side)
            client = client_factory.buildProtocol(server_side)
            server_transport = _Transport(server, isServer=True, hostAddress=server_side,
                                          peerAddress=client_side)
            client_transport = _Transport(client, isServer=False, hostAddress=client_side,
                                          peerAddress=server_side)
            self.pumps.append(iosim.connect(server, server_transport, client, client_transport,
                                            greet=False))
        return joined

    def flush(self):
        """Move bytes (and run due calls) until no connection has anything left to say."""
        for _ in range(10000):
            self.reactor.advance(0)
            moved = self._join_new_connections()
            for pump in list(self.pumps):
                moved = pump.pump() or moved
                for io in (pump.serverIO, pump.clientIO):
                    moved = isinstance(io, _Transport) and io.deliver_held() or moved
                if pump.clientIO.disconnected and pump.serverIO.disconnected:
                    self.pumps.remove(pump)
            if not moved and not any(c.getTime() <= self.reactor.seconds()
                                     for c in self.reactor.getDelayedCalls()):
                return
        raise AssertionError("the in-memory network never went quiet")


def pausable(protocol, peer=None):
    """
    C{protocol}, whose transport (a plain C{iosim} one: Autobahn's memory agent makes it) will
    pause its reading as the network's own transports do, and comes from C{peer} (an address
    L{client_address} made) when given. Returns C{protocol}.
    """
    make_connection = protocol.makeConnection

    def makeConnection(transport):
        if type(transport) is iosim.FakeTransport:
            transport.__class__ = _Transport
        if peer is not None:
            transport.peerAddress = peer
        make_connection(transport)

    protocol.makeConnection = makeConnection
    return protocol


def _refused():
    return Failure(ConnectionRefusedError())
