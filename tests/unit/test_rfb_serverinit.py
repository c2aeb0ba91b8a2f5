"""
Tests for L{vncproxy.rfb.serverinit.ServerInitReader}: QEMU's ServerInit (from the testbed) is
passed through unchanged in every chunking; a hostile desktop-name length or pixel format fails
with a reason as soon as the 24-byte header is in.
"""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vncproxy.rfb import HandshakeFailed, ServerInitReader, ServerInitReceived
from vncproxy.rfb.serverinit import ServerInitState
from vncproxy.rfb.wire import MAX_DESKTOP_NAME_LENGTH

PIXEL_FORMAT = bytes.fromhex("2018000100ff00ff00ff100800000000")
QEMU = bytes.fromhex("02d00190") + PIXEL_FORMAT + bytes.fromhex("0000000a") + b"QEMU (tb1)"
UPDATE = bytes.fromhex("0000000100000000" "02d0019000000000")  # what may follow at once


def server_init(name_length, pixel_format=PIXEL_FORMAT, name=None):
    name = b"x" * name_length if name is None else name
    return struct.pack("!HH", 640, 480) + pixel_format + struct.pack("!I", name_length) + name


def feed(chunks):
    reader = ServerInitReader()
    events = []
    for chunk in chunks:
        events += reader.receive_data(chunk)
    return reader, events


def split(data, cuts):
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:])]


GOOD = [
    ("qemu", QEMU, b""),
    ("qemu-then-update", QEMU, UPDATE),
    ("empty-name", server_init(0), b""),
    ("longest-name", server_init(MAX_DESKTOP_NAME_LENGTH), b""),
    ("8bpp-colour-map", server_init(3, bytes.fromhex("08080000" "0000000000000000" "00000000")), b""),
]


@pytest.mark.parametrize("name,message,after", GOOD, ids=[g[0] for g in GOOD])
def test_good_server_init_passes_unchanged_in_every_chunking(name, message, after):
    """Whole, byte by byte and in random pieces: one ServerInitReceived with the bytes unchanged
    and what followed as leftover."""
    data = message + after
    expected = [ServerInitReceived(message, after)]
    assert feed([data])[1] == expected
    reader, events = feed([bytes([b]) for b in data])
    assert reader.state is ServerInitState.DONE
    # Byte by byte, what follows arrives after DONE: the leftover is empty, the rest ignored.
    assert events == [ServerInitReceived(message, b"")]

    @given(cuts=st.lists(st.integers(1, len(message) - 1)))
    def pieces(cuts):
        chunks = split(message, cuts)
        chunks[-1] += after  # what follows comes with the last piece: it is the leftover
        assert feed(chunks)[1] == expected

    pieces()


BAD = [
    ("4-gib-name", server_init(0xFFFFFFFF, name=b""),
     "protocol error: desktop name of 4294967295 bytes exceeds 4096"),
    ("name-one-over", server_init(MAX_DESKTOP_NAME_LENGTH + 1, name=b""),
     "protocol error: desktop name of 4097 bytes exceeds 4096"),
    ("bpp-24", server_init(1, bytes.fromhex("1818000100ff00ff00ff100800000000")),
     "protocol error: impossible pixel format (bits-per-pixel 24, depth 24, true-colour 1)"),
    ("depth-over-bpp", server_init(1, bytes.fromhex("1020000100ff00ff00ff100800000000")),
     "protocol error: impossible pixel format (bits-per-pixel 16, depth 32, true-colour 1)"),
    ("depth-0", server_init(1, bytes.fromhex("2000000100ff00ff00ff100800000000")),
     "protocol error: impossible pixel format (bits-per-pixel 32, depth 0, true-colour 1)"),
    ("true-colour-7", server_init(1, bytes.fromhex("2018000700ff00ff00ff100800000000")),
     "protocol error: impossible pixel format (bits-per-pixel 32, depth 24, true-colour 7)"),
]


@pytest.mark.parametrize("name,header,reason", BAD, ids=[b[0] for b in BAD])
def test_hostile_server_init_fails_once_the_header_is_in(name, header, reason):
    """The 24-byte header is enough to refuse: one HandshakeFailed with the reason, in every
    chunking, and nothing after it counts."""
    for chunks in ([header[:24]], [bytes([b]) for b in header[:24]], [header[:23], header[23:]]):
        reader, events = feed(chunks + [b"more"])
        assert events == [HandshakeFailed(reason)]
        assert reader.state is ServerInitState.FAILED


def test_incomplete_header_waits():
    """23 bytes are not a verdict."""
    reader, events = feed([QEMU[:23]])
    assert events == [] and reader.state is ServerInitState.AWAIT_SERVER_INIT
