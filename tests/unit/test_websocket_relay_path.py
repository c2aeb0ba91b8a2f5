"""
The relay's path through L{ConsoleServerProtocol} (vncproxy/web/websocket.py) on a
StringTransport: what its C{dataReceived}, C{sendData} and the viewer's C{send} do instead of
Autobahn's general versions gives the same bytes on the wire, the same frame-by-frame delivery,
and leaves every unusual case to Autobahn. The session is a recorder (the integration tests run
the real one).
"""

import os
import random
import struct
from types import SimpleNamespace

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from vncproxy.relay import FastPaths, nvxmask
from vncproxy.web import websocket

UPGRADE = (b"GET /websockify HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")


class _Session:
    def __init__(self):
        self.pieces = []
        self.lost = None

    def start(self):
        pass

    def viewer_data(self, data):
        self.pieces.append(data)

    def viewer_lost(self, resumable=False):
        self.lost = resumable


class _Protocol(websocket.ConsoleServerProtocol):
    """
    The real protocol with admission replaced: every upgrade is admitted with a recorder.
    """

    def onConnect(self, request):
        self._session = _Session()
        return None


def _frame(payload, opcode=2, fin=True, mask=b"\x1f\x2e\x3d\x4c"):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


ALL_ON = FastPaths(write_through=True, zero_copy=True, websocket_send=True,
                   websocket_receive=True, websocket_unmask=nvxmask.applies())


@pytest.fixture(params=[ALL_ON, FastPaths.off()], ids=["fast-paths-on", "fast-paths-off"])
def opened(request):
    """
    A protocol through its opening handshake, its transport cleared; closed afterwards. Every
    test runs with the WebSocket fast paths on and off: the bytes must be the same.
    """
    factory = websocket.make_factory(ctx=SimpleNamespace(reactor=Clock(),
                                                         fast_paths=request.param))
    factory.protocol = _Protocol
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0,
                               closeHandshakeTimeout=0)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(UPGRADE)
    assert protocol.state == WebSocketServerProtocol.STATE_OPEN
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    transport.clear()
    yield protocol, transport
    protocol.connectionLost(Failure(ConnectionDone()))


def test_frames_reach_the_session_piece_by_piece_unmasked(opened):
    """
    Binary frames arriving whole, byte by byte, or several in one read reach the session
    unmasked and in order.
    """
    protocol, _ = opened
    payloads = [b"k" * 16, os.urandom(300), b"\x00", os.urandom(70000)]
    wire = b"".join(_frame(p) for p in payloads)
    protocol.dataReceived(wire)
    for i in range(0, len(wire), 7):
        protocol.dataReceived(wire[i:i + 7])
    received = b"".join(protocol._session.pieces)
    assert received == b"".join(payloads) * 2


def test_viewer_send_writes_one_binary_frame_at_once(opened):
    """
    What the session sends the viewer is on the transport at once as one unmasked binary
    frame per call, counted in Autobahn's traffic statistics.
    """
    protocol, transport = opened
    viewer = websocket.WebSocketViewer(protocol)
    viewer.send(b"k" * 16)
    viewer.send(b"x" * 200)
    assert transport.value() == (b"\x82\x10" + b"k" * 16 + b"\x82\x7e\x00\xc8" + b"x" * 200)
    assert protocol.trafficStats.outgoingOctetsWireLevel == 18 + 204


def test_send_waits_behind_autobahns_queue(opened):
    """
    While Autobahn holds bytes in its own send queue (a chopped or synchronous send), a send
    is queued behind them rather than written ahead of them.
    """
    protocol, transport = opened
    protocol.send_queue.append((b"queued", False))
    protocol.triggered = True  # its drain is already scheduled
    protocol.sendData(b"later")
    assert transport.value() == b""
    assert [data for data, _ in protocol.send_queue] == [b"queued", b"later"]


def test_send_after_close_started_is_autobahns(opened):
    """
    Once the closing handshake started, the viewer's send writes nothing and Autobahn's own
    close frame still goes out.
    """
    protocol, transport = opened
    viewer = websocket.WebSocketViewer(protocol)
    protocol.sendClose(4000, "bye")
    closing = transport.value()
    assert closing[:1] == b"\x88"
    viewer.send(b"late")
    assert transport.value() == closing


def _open(fast, **options):
    factory = websocket.make_factory(ctx=SimpleNamespace(reactor=Clock(), fast_paths=fast))
    factory.protocol = _Protocol
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0,
                               closeHandshakeTimeout=0, **options)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(UPGRADE)
    transport.clear()
    return protocol, transport


_COUNTERS = ("outgoingOctetsWireLevel", "outgoingOctetsWebSocketLevel", "outgoingOctetsAppLevel",
             "outgoingWebSocketFrames", "outgoingWebSocketMessages")


def _sent(fast, sends, before=None, **options):
    """What C{sends} (sendMessage keyword arguments) put on the wire, and Autobahn's counters
    and send state after them (an exception counts as what happened)."""
    protocol, transport = _open(fast, **options)
    random.seed(6455)  # Autobahn's masks for masked server frames: the same on both runs
    if before:
        before(protocol)
    outcome = []
    for kw in sends:
        try:
            protocol.sendMessage(**kw)
        except Exception as e:  # Autobahn's refusals: the same on both paths
            outcome.append(type(e).__name__)
    stats = protocol.trafficStats
    result = (transport.value(), outcome, [getattr(stats, c) for c in _COUNTERS],
              protocol.send_state, b"".join(data for data, _ in protocol.send_queue))
    protocol.connectionLost(Failure(ConnectionDone()))
    return result


SIZES = [0, 1, 16, 125, 126, 127, 1000, 65535, 65536, 70000]


@pytest.mark.parametrize("case", [
    "plain", "text too", "fragment size", "sync", "limit", "auto-fragment", "compression off",
    "mask server frames", "begun message", "queued", "closing"])
def test_our_frames_to_the_viewer_are_autobahns_bytes(case):
    """
    Binary messages to the viewer, written with our own frame header, are byte for byte what
    Autobahn's sendMessage writes (every length form, at each edge), with the same traffic
    counters and send state; and every case our header does not cover (text, explicit
    fragments, sync, over the size limit, automatic fragmentation, masked server frames, a
    fragmented message begun, Autobahn's queue not empty, a closing connection) is
    Autobahn's, with its bytes or its refusal.
    """
    rng = random.Random(case)
    sends = [dict(payload=rng.randbytes(n), isBinary=True) for n in SIZES]
    options, before = {}, None
    if case == "text too":
        sends.insert(3, dict(payload=b"text", isBinary=False))
    elif case == "fragment size":
        sends.insert(2, dict(payload=b"x" * 300, isBinary=True, fragmentSize=100))
    elif case == "sync":
        sends.insert(2, dict(payload=b"x" * 30, isBinary=True, sync=True))
    elif case == "limit":
        options = dict(maxMessagePayloadSize=1000)
    elif case == "auto-fragment":
        options = dict(autoFragmentSize=500)
    elif case == "compression off":
        sends = [dict(kw, doNotCompress=True) for kw in sends]
    elif case == "mask server frames":
        options = dict(maskServerFrames=True)
    elif case == "begun message":
        def before(protocol):
            protocol.beginMessage(isBinary=True)
            protocol.beginMessageFrame(5)
    elif case == "queued":
        def before(protocol):
            protocol.send_queue.append((b"queued", False))
            protocol.triggered = True
    elif case == "closing":
        def before(protocol):
            protocol.sendClose(1000)
    on = _sent(ALL_ON, sends, before, **options)
    off = _sent(FastPaths.off(), sends, before, **options)
    assert on == off
    assert on[0] or on[4] or case == "closing"


def test_our_frames_skip_autobahns_frame_building(monkeypatch):
    """With the send fast path on, a plain binary message does not go through Autobahn's
    sendFrame (the point of the fast path); a text message still does."""
    protocol, transport = _open(ALL_ON)
    calls = []
    real = WebSocketServerProtocol.sendFrame
    monkeypatch.setattr(WebSocketServerProtocol, "sendFrame",
                        lambda self, *a, **kw: calls.append(kw.get("opcode")) or real(
                            self, *a, **kw))
    protocol.sendMessage(b"key", isBinary=True)
    assert calls == [] and transport.value() == b"\x82\x03key"
    protocol.sendMessage(b"t", isBinary=False)
    assert calls == [1]
