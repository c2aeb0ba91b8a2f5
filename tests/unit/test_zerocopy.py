"""
The splice(2) relay (vncproxy.relay.zerocopy) between two real loopback TCP connections: a "VNC
server" socket feeding a Twisted transport, relayed to a Twisted transport whose peer is the
"viewer" socket.
"""

import os
import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from vncproxy.relay import writethrough, zerocopy
from vncproxy.relay.wsframes import websocket_header
from vncproxy.relay.zerocopy import SpliceRelay

pytestmark = pytest.mark.skipif(not zerocopy.available(), reason="no os.splice on this platform")


class _Accepted(protocol.Protocol):
    def __init__(self, made, lost, received):
        self._made = made
        self._lost = lost
        self._received = received

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self._made.callback(self)

    def dataReceived(self, data):
        self._received(data)

    def connectionLost(self, reason):
        self._lost.callback(reason.type)


@implementer(IPushProducer)
class _Throttle:
    def __init__(self, transport):
        self._transport = transport
        self.paused = 0

    def pauseProducing(self):
        self.paused += 1
        self._transport.pauseProducing()

    def resumeProducing(self):
        self._transport.resumeProducing()

    def stopProducing(self):
        pass


class _Viewer:
    def __init__(self, transport, header=None):
        self.network_transport = transport
        self._header = header
        self.ready = True

    def splice_ready(self):
        return self.ready

    def splice_header(self, n):
        return self._header(n) if self._header else b""


class Relay:
    """
    backend (plain socket) -> source transport -> relay -> sink transport -> viewer (socket).
    """

    def __init__(self):
        self.moved = []
        self.ordinary = []
        self._ports = []
        self.backend = self.viewer = None

    @defer.inlineCallbacks
    def start(self, header=None, **kw):
        source_made, self.source_lost = defer.Deferred(), defer.Deferred()
        sink_made, self.sink_lost = defer.Deferred(), defer.Deferred()
        self.backend = self._connect(source_made, self.source_lost, self._ordinary)
        source = yield source_made
        self.viewer = self._connect(sink_made, self.sink_lost, lambda data: None)
        sink = yield sink_made
        self.source, self.sink = source.transport, sink.transport
        writethrough.enable(self.sink)
        self.throttle = _Throttle(self.source)
        self.sink.registerProducer(self.throttle, True)
        self.viewer_adapter = _Viewer(self.sink, header)
        self.relay = SpliceRelay.install(self.source, self.viewer_adapter, self.moved.append,
                                         **kw)
        return self

    def _ordinary(self, data):
        self.ordinary.append(len(data))
        header = self.viewer_adapter.splice_header(len(data))  # frames as Autobahn would
        self.sink.write(header + data)

    def _connect(self, made, lost, received):
        port = reactor.listenTCP(0, protocol.Factory.forProtocol(
            lambda: _Accepted(made, lost, received)), interface="127.0.0.1")
        self._ports.append(port)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    def close(self):
        self.backend.close()
        self.viewer.close()
        for transport, lost in ((self.source, self.source_lost), (self.sink, self.sink_lost)):
            transport.abortConnection()
            pytest_twisted.blockon(lost)
        for port in self._ports:
            pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


@pytest.fixture
def relay():
    made = []

    def make(**kw):
        made.append(Relay())
        return made[-1].start(**kw)

    yield make
    for r in made:
        r.close()


def _recv_all(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(min(n - len(out), 1 << 20))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _pattern(n):
    block = bytes(range(251)) * 4096
    return (block * (n // len(block) + 1))[:n]


def _send_in_thread(sock, data):
    return deferToThread(sock.sendall, data)


def _unframe(stream):
    """Payloads of the unmasked binary frames in C{stream}, checking each header."""
    out = bytearray()
    i = 0
    while i < len(stream):
        assert stream[i] == 0x82
        n = stream[i + 1]
        i += 2
        if n == 126:
            (n,) = struct.unpack_from("!H", stream, i)
            i += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", stream, i)
            i += 8
        assert n > 0
        out += stream[i:i + n]
        i += n
    assert i == len(stream)
    return bytes(out)


@pytest.mark.parametrize("length, header", [
    (0, b"\x82\x00"), (1, b"\x82\x01"), (125, b"\x82\x7d"), (126, b"\x82\x7e\x00\x7e"),
    (65535, b"\x82\x7e\xff\xff"), (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    (256 * 1024, b"\x82\x7f" + (256 * 1024).to_bytes(8, "big")),
])
def test_websocket_header_follows_rfc6455_length_encoding(length, header):
    """Frame headers use the 7-bit, 16-bit or 64-bit length form as RFC 6455 section 5.2 says."""
    assert websocket_header(length) == header


def test_it_does_not_apply_to_transports_that_are_not_plain_sockets():
    """A transport that is not a plain TCP connection (or carries TLS) keeps the ordinary path."""
    fake = StringTransport()
    assert SpliceRelay.install(fake, _Viewer(fake), lambda n: None) is None


@pytest_twisted.inlineCallbacks
def test_a_bulk_stream_arrives_whole_and_mostly_spliced(relay):
    """32 MiB from the server reach the viewer byte for byte, nearly all without a copy."""
    r = yield relay()
    data = _pattern(32 << 20)
    sent = _send_in_thread(r.backend, data)
    got = yield deferToThread(_recv_all, r.viewer, len(data))
    yield sent
    assert got == data
    assert sum(r.moved) > len(data) // 2
    assert sum(r.moved) + sum(r.ordinary) == len(data)


@pytest_twisted.inlineCallbacks
def test_websocket_frames_carry_the_stream(relay):
    """With a frame header per chunk, the viewer reads well-formed frames holding the stream."""
    r = yield relay(header=websocket_header, threshold=0)
    data = _pattern(8 << 20)
    sent = _send_in_thread(r.backend, data)
    expected = len(data)
    stream = bytearray()
    while True:
        stream += yield deferToThread(r.viewer.recv, 1 << 20)
        try:
            payload = _unframe(bytes(stream))
        except (AssertionError, struct.error, IndexError):
            continue
        if len(payload) == expected:
            break
    yield sent
    assert payload == data
    assert sum(r.moved) > len(data) // 2


@pytest_twisted.inlineCallbacks
def test_keystroke_sized_reads_take_the_ordinary_path(relay):
    """Small messages are relayed by copy: splicing them would cost a system call more."""
    r = yield relay()
    for i in range(20):
        r.backend.sendall(b"k%015d" % i)
        got = yield deferToThread(_recv_all, r.viewer, 16)
        assert got == b"k%015d" % i
    assert sum(r.moved) == 0
    assert sum(r.ordinary) == 20 * 16


@pytest_twisted.inlineCallbacks
def test_a_viewer_not_ready_for_a_frame_gets_the_ordinary_path(relay):
    """While the viewer's protocol cannot take a frame, bytes go the ordinary way, in order."""
    r = yield relay(threshold=0)
    r.viewer_adapter.ready = False
    data = _pattern(4 << 20)
    sent = _send_in_thread(r.backend, data)
    got = yield deferToThread(_recv_all, r.viewer, len(data))
    yield sent
    assert got == data
    assert sum(r.moved) == 0


@pytest_twisted.inlineCallbacks
def test_a_viewer_that_does_not_read_pauses_the_server_and_nothing_piles_up(relay):
    """A stalled viewer pauses reading from the server; the proxy holds at most about one chunk."""
    r = yield relay(threshold=0)
    data = _pattern(64 << 20)
    sent = _send_in_thread(r.backend, data)
    d = defer.Deferred()
    reactor.callLater(1.0, d.callback, None)
    yield d
    assert r.throttle.paused >= 1
    queued = len(r.sink.dataBuffer) - r.sink.offset + sum(map(len, r.sink._tempDataBuffer))
    assert queued <= r.sink.bufferSize + zerocopy.CHUNK
    got = yield deferToThread(_recv_all, r.viewer, len(data))
    yield sent
    assert got == data


@pytest_twisted.inlineCallbacks
def test_the_server_closing_is_a_clean_end_of_stream(relay):
    """When the server closes after its last bytes, the viewer has them all and the source ends."""
    r = yield relay(threshold=0)
    data = _pattern(1 << 20)
    r.backend.sendall(data)
    r.backend.shutdown(socket.SHUT_WR)
    got = yield deferToThread(_recv_all, r.viewer, len(data))
    assert got == data
    reason = yield r.source_lost
    assert reason.__name__ == "ConnectionDone"
    r.source_lost = defer.succeed(None)


@pytest_twisted.inlineCallbacks
def test_a_viewer_that_resets_loses_its_connection_without_an_exception(relay):
    """A viewer gone mid-stream is reported lost by Twisted; the relay raises nothing."""
    r = yield relay(threshold=0)
    r.viewer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    r.viewer.close()
    r.viewer = socket.socket()
    sent = _send_in_thread(r.backend, _pattern(8 << 20))
    reason = yield r.sink_lost
    assert reason.__name__ in ("ConnectionLost", "ConnectionDone")
    r.sink_lost = defer.succeed(None)
    r.backend.close()
    yield sent.addErrback(lambda f: None)


@pytest_twisted.inlineCallbacks
def test_a_failure_mid_chunk_never_leaves_bytes_for_another_session(relay):
    """If forwarding fails half way, the shared pipe is replaced: its leftovers go nowhere."""
    r = yield relay(threshold=0)
    r.backend.sendall(_pattern(64 << 10))  # the first read: the ordinary path
    yield deferToThread(_recv_all, r.viewer, 64 << 10)
    calls = []

    def failing_write(data):
        calls.append(len(data))
        raise RuntimeError("simulated failure while queueing the rest")

    r.viewer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    r.sink.write = failing_write
    pipe_before = zerocopy._Pipe.get()
    sent = _send_in_thread(r.backend, _pattern(8 << 20))  # more than the viewer's socket takes
    for _ in range(200):
        if calls:
            break
        d = defer.Deferred()
        reactor.callLater(0.01, d.callback, None)
        yield d
    assert calls, "the viewer's socket took everything: the failure path was not reached"
    assert zerocopy._Pipe.fds != pipe_before
    r_fd, _ = zerocopy._Pipe.get()
    with pytest.raises(BlockingIOError):
        os.read(r_fd, 1)  # the new pipe is empty
    r.backend.close()
    yield sent.addErrback(lambda f: None)
