"""
The differential target of the WebSocket receive fast path: the same viewer bytes, cut the same
way, go to the console's protocol with the fast paths on (our L{BinaryFrameReader} first, with
the in-place NVX unmasker where Autobahn uses NVX; and our own frames to the viewer) and with
them off (Autobahn alone); the session must get the same bytes, the viewer the same
replies (pongs, close frames with their codes), and the connection must end up in the same
state. Used by hypothesis (tests/fuzz/test_wsframes_fuzz.py, structured frame streams; and
test_parsers_fuzz.py, raw and mutated bytes), by atheris (fuzz/websocket_frames.py) and by the
regression replay.
"""

import random
import struct
from types import SimpleNamespace

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from vncproxy.relay import FastPaths, nvxmask
from vncproxy.web import websocket

UPGRADE = (b"GET /websockify HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")
#: Small limits, so that frames over them are cheap to make (the service's are 1 MiB).
MAX_FRAME = 70000
MAX_MESSAGE = 140000
ON = FastPaths(websocket_send=True, websocket_receive=True,
               websocket_unmask=nvxmask.applies())
OFF = FastPaths.off()


class _Recorder:
    def __init__(self):
        self.received = bytearray()
        self.lost = None

    def start(self):
        pass

    def viewer_data(self, data):
        self.received += data

    def viewer_lost(self, resumable=False):
        self.lost = resumable


class _Transport(StringTransport):
    """
    A StringTransport that, like Twisted's TCP transports, lets a producer be unregistered
    when none is (Autobahn 26's dropConnection does).
    """

    def unregisterProducer(self):
        if self.producer is not None:
            super().unregisterProducer()


class _Protocol(websocket.ConsoleServerProtocol):
    def onConnect(self, request):
        self._session = _Recorder()


def opened(fast, max_frame=MAX_FRAME, max_message=MAX_MESSAGE):
    """
    The console's protocol through its opening handshake on a StringTransport.
    """
    factory = websocket.make_factory(SimpleNamespace(reactor=Clock(), fast_paths=fast))
    factory.protocol = _Protocol
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0,
                               closeHandshakeTimeout=0, maxFramePayloadSize=max_frame,
                               maxMessagePayloadSize=max_message)
    protocol = factory.buildProtocol(None)
    transport = _Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(UPGRADE)
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    transport.clear()
    return protocol, transport


def outcome(fast, chunks):
    """
    What the viewer's C{chunks} did: (bytes to the session, bytes to the viewer, WebSocket
    state, whether the transport is being closed, whether we failed the connection).
    """
    protocol, transport = opened(fast)
    session = protocol._session
    for chunk in chunks:
        protocol.dataReceived(chunk)
    result = (bytes(session.received), transport.value(), protocol.state,
              transport.disconnecting, protocol.failedByMe)
    protocol.connectionLost(Failure(ConnectionDone()))
    return result


def assert_same(chunks):
    """
    The fast path and Autobahn alone agree on C{chunks}.
    """
    fast, plain = outcome(ON, chunks), outcome(OFF, chunks)
    names = ("to the session", "to the viewer", "state", "closing", "failed by us")
    for name, a, b in zip(names, fast, plain):
        assert a == b, f"{name} differs: fast path {a!r:.200} vs Autobahn {b!r:.200}"


def frame(payload, opcode=2, fin=True, mask=b"\x1f\x2e\x3d\x4c", rsv=0, long_form=None):
    """
    One frame as a viewer writes it (C{mask=None}: unmasked; C{long_form}: 126 or 127 to force
    a longer length encoding than needed).
    """
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    bit = 0x80 if mask is not None else 0
    form = long_form or (0 if n < 126 else 126 if n < 65536 else 127)
    if form == 0:
        head += bytes([bit | n])
    elif form == 126:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def chunks_of(stream, seed):
    """
    C{stream} cut at pseudo-random places drawn from C{seed} (pieces of 0 bytes to 4 KiB).
    """
    rng = random.Random(seed)
    chunks, at = [], 0
    while at < len(stream):
        size = rng.choice((0, 1, 2, 3, 5, 8, 14, 30, 200, 4096))
        chunks.append(stream[at:at + size])
        at += size
    return chunks


def websocket_frames(data):
    """
    Raw bytes as a viewer's frame stream: the first byte seeds the cuts.
    """
    if not data:
        return
    assert_same(chunks_of(data[1:], data[0]))


_MASK = b"\xa1\xb2\xc3\xd4"
SEEDS = [
    b"\x00" + frame(b"\x00\x01\x02\x03", mask=_MASK) + frame(b"k" * 300, mask=_MASK),
    b"\x07" + frame(b"a", mask=_MASK) + frame(b"hi", opcode=9, mask=_MASK)
    + frame(b"b" * 10, fin=False, mask=_MASK) + frame(b"c", opcode=0, mask=_MASK),
    b"\x11" + frame(b"x" * 20, mask=_MASK) + frame("héllo".encode(), opcode=1, mask=_MASK)
    + frame(struct.pack("!H", 1000) + b"bye", opcode=8, mask=_MASK),
    b"\x2a" + frame(b"y" * 5, mask=_MASK) + frame(b"z", mask=None),
]

__all__ = ["SEEDS", "assert_same", "frame", "outcome", "websocket_frames"]
