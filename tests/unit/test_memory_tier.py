"""
The in-memory network of tests/support/memorynet.py: what it joins, what it refuses, and that
bytes cross it in both directions until both sides are quiet.
"""

from autobahn.twisted.testing import MemoryReactorClockResolver
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from tests.support.memorynet import MemoryNetwork


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data.upper())


class Caller(Protocol):
    received = b""

    def connectionMade(self):
        self.transport.write(b"hello")

    def dataReceived(self, data):
        self.received += data


class CallerFactory(ClientFactory):
    def __init__(self):
        self.caller = Caller()
        self.failure = None

    def buildProtocol(self, addr):
        return self.caller

    def clientConnectionFailed(self, connector, reason):
        self.failure = reason


def test_a_connection_reaches_the_listener_on_its_port_and_bytes_flow_both_ways():
    """connectTCP to a port with a listener is joined to it; flush delivers both directions."""
    reactor = MemoryReactorClockResolver()
    network = MemoryNetwork(reactor)
    network.listen(7000, Factory.forProtocol(Echo))
    factory = CallerFactory()
    reactor.connectTCP("127.0.0.1", 7000, factory)
    network.flush()
    assert factory.caller.received == b"HELLO"


def test_a_port_nobody_listens_on_is_refused():
    """A connection to a port without a listener fails as a refused TCP connection does."""
    reactor = MemoryReactorClockResolver()
    network = MemoryNetwork(reactor)
    factory = CallerFactory()
    reactor.connectTCP("127.0.0.1", 7001, factory)
    network.flush()
    assert factory.failure.check(ConnectionRefusedError)
    assert factory.caller.received == b""


def test_flush_runs_calls_that_are_due_but_not_later_ones():
    """flush runs what is due now; a timer in the future waits for the clock."""
    reactor = MemoryReactorClockResolver()
    network = MemoryNetwork(reactor)
    ran = []
    reactor.callLater(0, ran.append, "now")
    reactor.callLater(1, ran.append, "later")
    network.flush()
    assert ran == ["now"]
    reactor.advance(1)
    assert ran == ["now", "later"]


class Recorder(Protocol):
    def __init__(self):
        self.received = b""
        self.peer = None

    def connectionMade(self):
        self.peer = self.transport.getPeer()

    def dataReceived(self, data):
        self.received += data


def test_a_paused_transport_reads_nothing_until_it_resumes():
    """Bytes sent to a paused server wait (as in a socket buffer) and arrive once it resumes."""
    reactor = MemoryReactorClockResolver()
    network = MemoryNetwork(reactor)
    server = Recorder()
    network.listen(7002, OneShotFactory(server))
    factory = CallerFactory()
    reactor.connectTCP("127.0.0.1", 7002, factory)
    network.flush()
    server.transport.pauseProducing()
    factory.caller.transport.write(b" world")
    network.flush()
    held = server.received
    server.transport.resumeProducing()
    network.flush()
    assert (held, server.received) == (b"hello", b"hello world")


def test_a_connection_comes_from_the_address_it_binds():
    """connectTCP's bindAddress is the peer address the listener sees (a distinct client)."""
    reactor = MemoryReactorClockResolver()
    network = MemoryNetwork(reactor)
    server = Recorder()
    network.listen(7003, OneShotFactory(server))
    reactor.connectTCP("127.0.0.1", 7003, CallerFactory(), bindAddress=("127.0.0.7", 0))
    network.flush()
    assert server.peer.host == "127.0.0.7"
    assert server.transport.connected


class OneShotFactory(Factory):
    def __init__(self, protocol):
        self.instance = protocol

    def buildProtocol(self, addr):
        return self.instance
