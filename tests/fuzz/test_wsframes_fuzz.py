"""
Differential fuzzing of the WebSocket receive fast path against Autobahn (see
L{tests.fuzz.wsframe_targets}): random streams of frames (binary, fragmented, text, control
frames in between, invalid ones: reserved bits and opcodes, unmasked, lengths not in their
shortest form, control frames too long or fragmented, frames over the limits), with random
masks and random cuts, must give the same bytes to the session, the same replies to the viewer
and the same end state with the fast path on and off.
"""

import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.wsframe_targets import (
    MAX_FRAME,
    ON,
    assert_same,
    chunks_of,
    frame,
    outcome,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
masks = st.binary(min_size=4, max_size=4)
small = st.binary(max_size=140)


def _big(seed, n):
    return random.Random(seed).randbytes(n)


@st.composite
def frames(draw):
    mask = draw(masks)
    kind = draw(st.sampled_from(
        ["binary"] * 8 + ["medium"] * 2 + ["fragment", "continuation", "text", "bad_text", "ping", "pong",
                          "close", "close_len1", "reserved_data", "reserved_control", "rsv",
                          "unmasked", "not_shortest", "control_long", "control_fragmented",
                          "over_frame_limit", "large", "empty"]))
    if kind == "binary":
        return frame(draw(small), mask=mask)
    if kind == "medium":  # several of these in one read go to the unmasker for larger reads
        return frame(_big(draw(st.integers()), draw(st.integers(126, 5000))), mask=mask)
    if kind == "empty":
        return frame(b"", mask=mask)
    if kind == "large":  # the 64-bit length form, under the limit
        return frame(_big(draw(st.integers()), draw(st.integers(65536, MAX_FRAME))), mask=mask)
    if kind == "over_frame_limit":
        return frame(_big(draw(st.integers()), MAX_FRAME + draw(st.integers(1, 100))), mask=mask)
    if kind == "fragment":
        return frame(draw(small), opcode=draw(st.sampled_from([1, 2])), fin=False, mask=mask)
    if kind == "continuation":
        return frame(draw(small), opcode=0, fin=draw(st.booleans()), mask=mask)
    if kind == "text":
        return frame(draw(st.text(max_size=40)).encode(), opcode=1, mask=mask)
    if kind == "bad_text":
        return frame(b"ok\xff\xfe", opcode=1, mask=mask)
    if kind in ("ping", "pong"):
        return frame(draw(st.binary(max_size=125)), opcode=9 if kind == "ping" else 10,
                     mask=mask)
    if kind == "close":
        code = draw(st.sampled_from([1000, 1001, 1002, 3000, 4999, 999, 1005, 5000]))
        return frame(struct.pack("!H", code) + draw(st.binary(max_size=20)), opcode=8,
                     mask=mask)
    if kind == "close_len1":
        return frame(b"x", opcode=8, mask=mask)
    if kind == "reserved_data":
        return frame(draw(small), opcode=draw(st.integers(3, 7)), mask=mask)
    if kind == "reserved_control":
        return frame(draw(small)[:125], opcode=draw(st.integers(11, 15)), mask=mask)
    if kind == "rsv":
        return frame(draw(small), rsv=draw(st.integers(1, 7)), mask=mask)
    if kind == "unmasked":
        return frame(draw(small), mask=None)
    if kind == "not_shortest":
        return frame(draw(st.binary(max_size=125)), mask=mask,
                     long_form=draw(st.sampled_from([126, 127])))
    if kind == "control_long":
        return frame(draw(st.binary(min_size=126, max_size=200)), opcode=9, mask=mask)
    if kind == "control_fragmented":
        return frame(draw(st.binary(max_size=20)), opcode=9, fin=False, mask=mask)
    raise AssertionError(kind)


@FUZZ
@given(stream=st.lists(frames(), max_size=12), cut=st.integers(0, 2**32),
       tail=st.binary(max_size=8))
def test_fast_path_and_autobahn_agree(stream, cut, tail):
    """Random frame streams, randomly cut, end the same way with the fast path on and off."""
    assert_same(chunks_of(b"".join(stream) + tail, cut))


@FUZZ
@given(payloads=st.lists(small, min_size=1, max_size=8), mask=masks, cut=st.integers(0, 2**32))
def test_valid_binary_streams_reach_the_session_whole(payloads, mask, cut):
    """A stream of valid binary frames reaches the session, unmasked, in order, nothing sent back."""
    wire = b"".join(frame(p, mask=mask) for p in payloads)
    received, to_viewer, _, closing, failed = outcome(ON, chunks_of(wire, cut))
    assert received == b"".join(payloads)
    assert (to_viewer, closing, failed) == (b"", False, False)

