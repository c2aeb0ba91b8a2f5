"""
The relay's path through L{ConsoleServerProtocol} (vncproxy/web/websocket.py) on a
StringTransport: what its C{dataReceived}, C{sendData} and the viewer's C{send} do instead of
Autobahn's general versions gives the same bytes on the wire, the same frame-by-frame delivery,
and leaves every unusual case to Autobahn. The session is a recorder (the integration tests run
the real one).
"""

import os
import struct
from types import SimpleNamespace

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from vncproxy.relay import FastPaths
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
                   websocket_receive=True)


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
