"""
Write-through transports (vncproxy.relay.writethrough) over real loopback TCP connections.
"""

import socket

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from vncproxy import relay
from vncproxy.relay import writethrough


class _Server(protocol.Protocol):
    def __init__(self, connected, lost):
        self._connected = connected
        self._lost = lost

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self._connected.callback(self)

    def connectionLost(self, reason):
        self._lost.callback(reason.type)  # the class: a Failure would errback the Deferred


@implementer(IPushProducer)
class _Producer:
    def __init__(self):
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self):
        self.paused += 1

    def resumeProducing(self):
        self.resumed += 1

    def stopProducing(self):
        pass


@pytest.fixture
def pair():
    """
    A Twisted server transport and the plain client socket connected to it.
    """
    connected, lost = defer.Deferred(), defer.Deferred()
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(lambda: _Server(connected, lost)),
                             interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    server = pytest_twisted.blockon(connected)
    yield server.transport, client, lost
    client.close()
    server.transport.abortConnection()
    pytest_twisted.blockon(lost)
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def _recv_now(sock, n=1 << 20):
    sock.setblocking(False)
    try:
        return sock.recv(n)
    except BlockingIOError:
        return b""
    finally:
        sock.setblocking(True)


def _recv_all(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def test_plain_twisted_write_waits_for_the_reactor(pair):
    """The baseline this module changes: an ordinary write reaches the socket a turn later."""
    transport, client, _ = pair
    transport.write(b"keystroke-16byte")
    assert _recv_now(client) == b""


def test_write_reaches_the_socket_before_returning(pair):
    """With nothing queued, the bytes are in the kernel when write() returns."""
    transport, client, _ = pair
    assert writethrough.enable(transport)
    transport.write(b"keystroke-16byte")
    assert _recv_now(client) == b"keystroke-16byte"


@pytest_twisted.inlineCallbacks
def test_a_session_connection_writes_through_only_when_switched_on(pair):
    """
    Sessions make their connections write through as they open (the upgrade and both RFB
    handshakes, not only the relay), under the same C{[relay] write_through} switch.
    """
    transport, client, _ = pair
    relay.write_through(relay.FastPaths.off(), transport)
    transport.write(b"RFB 003.008\n")
    assert _recv_now(client) == b""
    yield task.deferLater(reactor, 0.05, lambda: None)
    assert _recv_now(client) == b"RFB 003.008\n"  # on the reactor's next turn
    relay.write_through(relay.FastPaths(write_through=True), transport)
    transport.write(b"RFB 003.008\n")
    assert _recv_now(client) == b"RFB 003.008\n"


@pytest_twisted.inlineCallbacks
def test_a_full_socket_queues_the_rest_in_order_and_pauses_the_producer(pair):
    """What the socket refuses is queued behind, the producer is paused, then all arrives in order."""
    transport, client, _ = pair
    writethrough.enable(transport)
    producer = _Producer()
    transport.registerProducer(producer, True)
    blocks = [bytes([i]) * (256 * 1024) for i in range(40)]  # 10 MiB: more than loopback buffers
    for block in blocks:
        transport.write(block)
    assert producer.paused >= 1
    assert transport._tempDataBuffer or transport.dataBuffer
    data = yield deferToThread(_recv_all, client, sum(map(len, blocks)))
    assert data == b"".join(blocks)
    assert producer.resumed >= 1
    transport.unregisterProducer()


@pytest_twisted.inlineCallbacks
def test_a_write_to_a_reset_peer_raises_nothing_and_the_connection_is_lost(pair):
    """A socket error inside write() is left to Twisted, which reports the connection lost."""
    transport, client, lost = pair
    writethrough.enable(transport)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # RST
    yield task.deferLater(reactor, 0.05, lambda: None)
    for _ in range(3):
        transport.write(b"x" * 1000)  # must not raise
    lost_with = yield lost
    assert issubclass(lost_with, ConnectionLost)


def test_transports_it_does_not_apply_to_are_left_alone():
    """Non-socket transports and TLS connections keep Twisted's own write."""
    fake = StringTransport()
    original = fake.write
    assert writethrough.enable(fake) is False
    assert fake.write == original


def test_a_tls_connection_is_left_alone(pair):
    """A connection that started TLS must not have its plaintext bypass the TLS layer."""
    transport, _, _ = pair
    transport.TLS = True  # what startTLS sets on a Twisted TCP connection
    try:
        assert writethrough.enable(transport) is False
    finally:
        transport.TLS = False
