"""
The sans-IO frame reader of the WebSocket receive fast path (vncproxy/relay/wsframes.py), with
byte vectors cut at every place, by each unmasker (the public one, and Autobahn's NVX functions
of vncproxy/relay/nvxmask.py where Autobahn uses NVX), and its place in the console's protocol:
it takes the viewer's binary frames, hands everything else to Autobahn, and Autobahn's timers
run on the service's reactor. (The differential fuzzing against Autobahn is
tests/fuzz/test_wsframes_fuzz.py.)
"""

import os
import random
import struct

import pytest
from autobahn.websocket.xormasker import create_xor_masker

from tests.fuzz.wsframe_targets import OFF, ON, frame, opened
from vncproxy.relay import nvxmask
from vncproxy.relay.wsframes import (
    SMALL,
    BinaryFrameReader,
    unmask,
    unmask_spans,
    websocket_header,
)

UNMASKERS = [pytest.param(unmask_spans, id="public"),
             pytest.param(nvxmask.unmask_spans, id="nvx", marks=pytest.mark.skipif(
                 not nvxmask.applies(), reason="this Autobahn does not unmask with NVX"))]
FASTEST = nvxmask.unmask_spans if nvxmask.applies() else unmask_spans

MASK = b"\x37\xfa\x21\x3d"
# RFC 6455 section 5.7: a masked "Hello" from a client.
RFC_HELLO = bytes.fromhex("818537fa213d7f9f4d5158")


def every_cut(wire):
    yield [wire]
    for i in range(len(wire) + 1):
        yield [wire[:i], wire[i:]]
    yield [wire[i:i + 1] for i in range(len(wire))]


def read(reader, chunks):
    payload, rest = b"", None
    for chunk in chunks:
        assert rest is None, "bytes fed after the reader handed back"
        got, rest = reader.receive(chunk)
        assert type(got) is bytes
        payload += got
    return payload, rest


def test_rfc_example_as_binary():
    """The RFC's masked example, as a binary frame, is read as 'Hello' in every cut."""
    wire = b"\x82" + RFC_HELLO[1:]
    for chunks in every_cut(wire):
        assert read(BinaryFrameReader(), chunks) == (b"Hello", None)


@pytest.mark.parametrize("unmasker", UNMASKERS)
@pytest.mark.parametrize("size", [0, 1, 125, 126, 1000, 1030, 65535, 65536, 70000])
def test_each_length_form_in_every_cut(size, unmasker):
    """7-bit, 16-bit and 64-bit lengths, around their edges, whole or cut anywhere."""
    payload = os.urandom(size)
    wire = frame(payload, mask=MASK) + frame(b"next", mask=MASK)
    cuts = every_cut(wire) if size < 2000 else [[wire], [wire[:3], wire[3:]],
                                                [wire[:9], wire[9:5000], wire[5000:]]]
    for chunks in cuts:
        reader = BinaryFrameReader(unmasker=unmasker)
        assert read(reader, chunks) == (payload + b"next", None)
        assert not reader.inside_frame


@pytest.mark.parametrize("unmasker", UNMASKERS)
def test_many_frames_per_read_with_masks_and_payloads_across_every_cut(unmasker):
    """
    Frames of mixed sizes and masks (an upload's 4 KiB frames between keystrokes), read whole
    and cut at every place, in two and in three: payloads that straddle reads keep their mask
    phase, masks and headers split across reads are joined, and each read gives one piece.
    """
    rng = random.Random(21)
    payloads = [rng.randbytes(n) for n in (4096, 3, 1100, 0, 16, 4096, 5, 2000)]
    masks = [rng.randbytes(4) for _ in payloads]
    wire = b"".join(frame(p, mask=m) for p, m in zip(payloads, masks))
    want = b"".join(payloads)
    for i in range(len(wire) + 1):
        cuts = [[wire[:i], wire[i:]], [wire[:i], wire[i:i + 1031], wire[i + 1031:]]]
        for chunks in cuts:
            reader = BinaryFrameReader(unmasker=unmasker)
            assert read(reader, chunks) == (want, None), i
            assert not reader.inside_frame


@pytest.mark.parametrize("unmasker", UNMASKERS)
def test_a_long_payload_over_many_reads_of_every_phase(unmasker):
    """One 64 KiB payload fed in reads of sizes that leave every mask phase (1 to 4099
    bytes), unmasked as one."""
    payload = os.urandom(65536)
    wire = frame(payload, mask=MASK)
    for size in (1, 2, 3, 5, 1023, 1025, 4099):
        reader = BinaryFrameReader(unmasker=unmasker)
        chunks = [wire[i:i + size] for i in range(0, len(wire), size)] if size > 3 else (
            [wire[:2000]] + [wire[i:i + size] for i in range(2000, 2000 + 30 * size, size)]
            + [wire[2000 + 30 * size:]])
        assert read(reader, chunks) == (payload, None), size


@pytest.mark.parametrize("other, why", [
    (frame(b"x", opcode=1), "text"),
    (frame(b"x", opcode=9), "ping"),
    (frame(b"x", opcode=10), "pong"),
    (frame(struct.pack("!H", 1000), opcode=8), "close"),
    (frame(b"x", fin=False), "fragment"),
    (frame(b"x", opcode=0), "continuation"),
    (frame(b"x", rsv=4), "RSV bit"),
    (frame(b"x", opcode=3), "reserved opcode"),
    (frame(b"x", mask=None), "unmasked"),
    (frame(b"x", long_form=126), "16-bit length under 126"),
    (frame(b"x" * 200, long_form=127), "64-bit length under 65536"),
    (b"\x82\xff" + struct.pack("!Q", 1 << 63) + MASK, "64-bit length with the top bit"),
    (frame(b"x" * 2001), "over the limit"),
])
@pytest.mark.parametrize("before", [b"before", bytes(range(256)) * 5], ids=["short", "long"])
def test_what_the_reader_does_not_take_is_handed_back_whole(other, why, before):
    """
    Any frame but a masked final binary one within the limit is handed back from its first
    byte, with everything after it, whatever the cut; what came before is read.
    """
    alone = BinaryFrameReader(max_payload=2000, unmasker=FASTEST)
    assert alone.receive(other) == (b"", other), why  # alone in a read, as a keystroke comes
    wire = frame(before, mask=MASK) + other + frame(b"after", mask=MASK)
    for chunks in every_cut(wire):
        payload, rest = b"", None
        reader = BinaryFrameReader(max_payload=2000, unmasker=FASTEST)
        for i, chunk in enumerate(chunks):
            got, rest = reader.receive(chunk)
            payload += got
            if rest is not None:
                rest += b"".join(chunks[i + 1:])
                break
        assert (payload, rest) == (before, other + frame(b"after", mask=MASK)), why


def test_pieces_of_a_frame_arrive_as_they_come():
    """A frame's payload is delivered piece by piece, not held until the frame is complete."""
    payload = os.urandom(5000)
    wire = frame(payload, mask=MASK)
    reader = BinaryFrameReader()
    first, rest = reader.receive(wire[:1000])
    assert rest is None and first == payload[:1000 - 8]
    assert reader.inside_frame
    second, _ = reader.receive(wire[1000:])
    assert first + second == payload


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, SMALL - 1, SMALL, SMALL + 3, 100000])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 6])
def test_unmask_matches_autobahns_masker(size, offset):
    """Both unmasking methods give Autobahn's result, at any offset into the payload."""
    data = os.urandom(size)
    whole = create_xor_masker(MASK, offset + size).process(b"\x00" * offset + data)[offset:]
    assert unmask(data, MASK, offset) == whole


def test_header_of_our_frames():
    """The frames we send: 0x82 and the shortest length form."""
    assert websocket_header(5) == b"\x82\x05"
    assert websocket_header(126) == b"\x82\x7e\x00\x7e"
    assert websocket_header(65536) == b"\x82\x7f" + struct.pack("!Q", 65536)


def test_binary_frames_do_not_reach_autobahns_parser(monkeypatch):
    """With the fast path on, a viewer's binary frames bypass Autobahn's frame parser; a ping
    in between still gets Autobahn's pong, and the frames after it reach the session."""
    protocol, transport = opened(ON)
    calls = []
    real = type(protocol).processData
    monkeypatch.setattr(type(protocol), "processData",
                        lambda self: calls.append(1) or real(self))
    protocol.dataReceived(frame(b"key1", mask=MASK) + frame(b"key2", mask=MASK))
    assert calls == []
    protocol.dataReceived(frame(b"hi", opcode=9, mask=MASK) + frame(b"key3", mask=MASK))
    assert calls
    assert transport.value() == b"\x8a\x02hi"
    assert bytes(protocol._session.received) == b"key1key2key3"
    calls.clear()
    protocol.dataReceived(frame(b"key4", mask=MASK))
    assert calls == []  # Autobahn between messages again: back on the fast path
    assert bytes(protocol._session.received) == b"key1key2key3key4"


@pytest.mark.parametrize("fast", [ON, OFF], ids=["fast-paths-on", "fast-paths-off"])
def test_oversized_frame_is_refused_with_1009(fast):
    """A frame over the limit gets Autobahn's close 1009 either way, and nothing of it is
    relayed."""
    protocol, transport = opened(fast, max_frame=100, max_message=100)
    protocol.dataReceived(frame(b"ok", mask=MASK) + frame(b"x" * 101, mask=MASK))
    assert bytes(protocol._session.received) == b"ok"
    assert transport.value()[:4] == b"\x88" + bytes([len(transport.value()) - 2]) + b"\x03\xf1"


def test_autobahn_timers_run_on_the_services_reactor():
    """The close handshake's timeout is scheduled on the reactor the factory was given (here a
    test clock), not on txaio's global loop: advancing the clock drops a silent viewer."""
    protocol, transport = opened(ON)
    clock = protocol.factory.reactor
    protocol.factory.setProtocolOptions(closeHandshakeTimeout=5)
    protocol.closeHandshakeTimeout = 5
    protocol.sendClose(1000)
    assert not transport.disconnecting
    clock.advance(6)
    assert transport.disconnecting


def test_autobahns_connection_debug_line_is_formatted_only_for_debug(monkeypatch):
    """With the send fast path, Autobahn's per-connection pretty-print of its options runs only
    while txaio logs at debug level."""
    import txaio
    from autobahn.websocket import protocol as module

    from vncproxy.relay import wsprotocol

    monkeypatch.setattr(module, "pformat", module.pformat)
    wsprotocol.quiet_debug_lines()
    options = [("maxFramePayloadSize", 100, "factory")]
    monkeypatch.setattr(txaio, "get_global_log_level", lambda: "info")
    assert module.pformat(options) == ""
    monkeypatch.setattr(txaio, "get_global_log_level", lambda: "debug")
    assert module.pformat(options) == "[('maxFramePayloadSize', 100, 'factory')]"
