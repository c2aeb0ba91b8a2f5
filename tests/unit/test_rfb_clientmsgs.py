"""
The view-only filter of RFB client messages, with byte vectors of every message type a viewer
may send (RFC 6143 §7.5, QEMU's and noVNC's extensions), fed whole, in every two-way split,
byte by byte, and in arbitrary chunkings: what passes and what is dropped never depends on how
the bytes arrived.
"""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vncproxy.rfb.clientmsgs import ClientProtocolError, ViewOnlyFilter

PIXEL_FORMAT = bytes.fromhex("2018000100ff00ff00ff100800" "000000")
# (bytes, dropped kind or None)
MESSAGES = [
    (b"\x00\x00\x00\x00" + PIXEL_FORMAT, None),                                   # SetPixelFormat
    (bytes.fromhex("02000003" "00000000" "ffffff21" "fffffec6"), None),           # SetEncodings x3
    (bytes.fromhex("02000000"), None),                                            # SetEncodings x0
    (bytes.fromhex("03" "00" "0000" "0000" "0400" "0300"), None),                 # FBUpdateRequest
    (bytes.fromhex("04" "01" "0000" "0000ff0d"), "key"),                          # KeyEvent Return
    (bytes.fromhex("05" "01" "0010" "0020"), "pointer"),                          # PointerEvent
    (bytes.fromhex("06000000" "00000005") + b"hello", "cut_text"),                # ClientCutText
    (bytes.fromhex("06000000" "fffffff8") + bytes.fromhex("10000000" "00000001"),
     "cut_text"),                                                                 # extended clipboard
    (bytes.fromhex("96" "01" "0000" "0000" "0400" "0300"), None),                 # EnableContinuousUpdates
    (bytes.fromhex("f8000000" "80000002" "03") + b"abc", None),                   # ClientFence
    (bytes.fromhex("fb" "00" "01" "03"), "xvp"),                                  # xvp reboot
    (bytes.fromhex("fc00" "0400" "0300" "01" "00") + bytes(16), "desktop_size"),  # SetDesktopSize
    (bytes.fromhex("fd" "80" "0004") + b"\x00\x01\x02\x03", "gii"),               # gii big-endian
    (bytes.fromhex("fd" "00" "0200") + b"\x00\x01", "gii"),                       # gii little-endian
    (bytes.fromhex("ff" "00" "0001" "0000ff0d" "0000001c"), "key"),               # QEMU ext. KeyEvent
    (bytes.fromhex("ff" "01" "0000"), None),                                      # QEMU audio enable
    (bytes.fromhex("ff" "01" "0001"), None),                                      # QEMU audio disable
    (bytes.fromhex("ff" "01" "0002" "03" "02" "0000ac44"), None),                 # QEMU audio format
]
STREAM = b"".join(m for m, _ in MESSAGES)
PASSED = b"".join(m for m, kind in MESSAGES if kind is None)
DROPPED = {}
for _, kind in MESSAGES:
    if kind:
        DROPPED[kind] = DROPPED.get(kind, 0) + 1


def run(chunks):
    f = ViewOnlyFilter()
    out = b"".join(f.receive(c) for c in chunks)
    return out, f.dropped


def test_whole_stream():
    """Input messages are dropped and counted by kind; the rest passes byte for byte."""
    assert run([STREAM]) == (PASSED, DROPPED)


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_two_way_split(cut):
    assert run([STREAM[:cut], STREAM[cut:]]) == (PASSED, DROPPED)


def test_byte_by_byte():
    assert run([STREAM[i:i + 1] for i in range(len(STREAM))]) == (PASSED, DROPPED)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_chunking(cuts):
    points = [0, *sorted(cuts), len(STREAM)]
    assert run([STREAM[a:b] for a, b in zip(points, points[1:])]) == (PASSED, DROPPED)


@pytest.mark.parametrize("message", [m for m, kind in MESSAGES if kind is None])
def test_a_message_passes_only_once_complete(message):
    """Nothing of a passing message goes out before its last byte arrived."""
    f = ViewOnlyFilter()
    assert f.receive(message[:-1]) == b""
    assert f.receive(message[-1:]) == message


def test_a_long_dropped_clipboard_is_skipped_not_buffered():
    """A 4 MiB ClientCutText is skipped as it arrives; the message after it passes."""
    f = ViewOnlyFilter()
    size = 4 * 1024 * 1024
    assert f.receive(bytes.fromhex("06000000") + struct.pack("!I", size)) == b""
    for _ in range(size // 65536):
        assert f.receive(b"x" * 65536) == b""
        assert len(f._buf) == 0
    request = bytes.fromhex("03" "01" "0000" "0000" "0400" "0300")
    assert f.receive(request) == request
    assert f.dropped == {"cut_text": 1}


@pytest.mark.parametrize("data, error", [
    (b"\x07", "unknown client message type 7"),
    (b"\x01", "unknown client message type 1"),
    (b"\xfe", "unknown client message type 254"),
    (bytes.fromhex("ff02"), "unknown QEMU client message 2"),
    (bytes.fromhex("ff010003"), "unknown QEMU audio operation 3"),
    (bytes.fromhex("f8000000" "00000000" "41"), "ClientFence payload of 65 bytes"),
])
def test_what_cannot_be_sized_is_an_error(data, error):
    """After valid messages, a message of unknown length is a protocol error."""
    f = ViewOnlyFilter()
    with pytest.raises(ClientProtocolError, match=error):
        f.receive(PASSED + data)


def test_an_error_in_a_later_chunk():
    f = ViewOnlyFilter()
    assert f.receive(MESSAGES[0][0]) == MESSAGES[0][0]
    with pytest.raises(ClientProtocolError):
        f.receive(b"\x09" + bytes(10))
