"""
The benchmark's client-side WebSocket framing (bench/wsframe.py), which the benchmark and the
flow-control test rely on to count and check payload bytes.
"""

import base64
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import wsframe


def server_frame(payload, opcode=wsframe.OP_BINARY):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


STREAM = (server_frame(b"a" * 5) + server_frame(b"", wsframe.OP_PING)
          + server_frame(bytes(range(256)) * 300) + server_frame(b"pong!", wsframe.OP_PING)
          + server_frame(b"b" * 70000) + server_frame(struct.pack("!H", 1000), wsframe.OP_CLOSE))
PAYLOAD = b"a" * 5 + bytes(range(256)) * 300 + b"b" * 70000
CONTROLS = [(wsframe.OP_PING, b""), (wsframe.OP_PING, b"pong!"),
            (wsframe.OP_CLOSE, struct.pack("!H", 1000))]


def feed_in(chunks):
    decoder = wsframe.FrameDecoder()
    data, controls = b"", []
    for chunk in chunks:
        pieces, ctl = decoder.feed(chunk)
        data += b"".join(bytes(p) for p in pieces)
        controls += ctl
    return decoder, data, controls


def test_decoder_whole():
    """
    Frames of every length encoding decode to their payload, control frames apart.
    """
    decoder, data, controls = feed_in([STREAM])
    assert data == PAYLOAD and controls == CONTROLS and decoder.payload_bytes == len(PAYLOAD)


def test_decoder_byte_by_byte():
    """
    Fed one byte at a time (headers split anywhere), the decoder yields the same.
    """
    _, data, controls = feed_in([STREAM[i:i + 1] for i in range(len(STREAM))])
    assert data == PAYLOAD and controls == CONTROLS


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_decoder_any_split(cuts):
    """
    Any chunking of the stream decodes to the same payload and control frames.
    """
    cuts = sorted(set(cuts) | {0, len(STREAM)})
    _, data, controls = feed_in([STREAM[a:b] for a, b in zip(cuts, cuts[1:])])
    assert data == PAYLOAD and controls == CONTROLS


def test_decoder_refuses_masked_server_frames():
    """
    A masked frame from the server is a protocol error.
    """
    with pytest.raises(wsframe.ProtocolError):
        wsframe.FrameDecoder().feed(wsframe.encode(b"x"))


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_mask_is_rfc6455_xor(payload, key):
    """
    Masking XORs byte i with key[i % 4].
    """
    assert wsframe.mask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_encode_is_a_masked_final_binary_frame():
    """
    encode() writes FIN + binary, the mask bit, the length and the masked payload.
    """
    frame = wsframe.encode(b"hello" * 30)
    assert frame[0] == 0x82 and frame[1] == 0x80 | 126
    assert struct.unpack("!H", frame[2:4])[0] == 150
    key = frame[4:8]
    assert wsframe.mask(frame[8:], key) == b"hello" * 30


def test_handshake_accept_checked():
    """
    A 101 with the right Sec-WebSocket-Accept passes; a wrong accept or another status fails.
    """
    key = wsframe.new_key()
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    good = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    wsframe.check_handshake_response(good, key)
    with pytest.raises(wsframe.HandshakeError):
        wrong = (b"y" if accept.startswith(b"x") else b"x") + accept[1:]  # never the same
        wsframe.check_handshake_response(good.replace(accept, wrong), key)
    with pytest.raises(wsframe.HandshakeError) as refused:
        wsframe.check_handshake_response(b"HTTP/1.1 401 Unauthorized\r\n\r\n", key)
    assert refused.value.status == 401
