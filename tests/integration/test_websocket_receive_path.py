"""
The WebSocket receive fast path (vncproxy.relay.wsframes, wsprotocol) through the real service
on real sockets, with it on (the default) and switched off: what a viewer sends in every kind of
frame reaches the VNC server (the benchmark backend, echoing) byte for byte, in order; control
frames in between are answered; an invalid frame gets Autobahn's close code either way.
"""

import os
import struct
import subprocess
import sys

import pytest

from bench import wsframe
from bench.clients import ProxyWebSocketTarget
from bench.connections import Closed
from bench.service import REPO, ServiceProcess
from tests.fuzz.wsframe_targets import frame


@pytest.fixture(scope="module")
def backend():
    process = subprocess.Popen([sys.executable, "-m", "bench.backend"], cwd=REPO,
                               env=dict(os.environ, PYTHONPATH=str(REPO)),
                               stdout=subprocess.PIPE)
    yield f"127.0.0.1:{int(process.stdout.readline())}"
    process.terminate()
    process.wait(10)
    process.stdout.close()


@pytest.fixture(scope="module", params=["on", "off"])
def target(request, backend, tmp_path_factory):
    settings = [] if request.param == "on" else ["relay.websocket_receive=false"]
    proc = ServiceProcess(backend, tmp_path_factory.mktemp(f"service-{request.param}"),
                          settings=settings)
    yield ProxyWebSocketTarget(proc.info)
    proc.stop()


def _mask():
    return os.urandom(4)


def test_every_kind_of_data_frame_reaches_the_vnc_server_in_order(target):
    """
    Binary frames of each length form, cut anywhere by TCP, a fragmented message with a ping
    inside it, an empty frame and a text frame: the echo is every payload byte, in order.
    """
    conn = target.connect()
    try:
        conn.send(b"E")  # the backend echoes from here on
        payloads, wire = [], b""
        for size in (1, 16, 125, 126, 4096, 65535, 65536, 70000):
            payload = os.urandom(size)
            payloads.append(payload)
            wire += frame(payload, mask=_mask())
        wire += frame(b"", mask=_mask())
        wire += frame(b"part1-", fin=False, mask=_mask())
        wire += frame(b"ping", opcode=9, mask=_mask())
        wire += frame(b"part2-", opcode=0, fin=False, mask=_mask())
        wire += frame(b"part3", opcode=0, mask=_mask())
        wire += frame("text é".encode(), opcode=1, mask=_mask())
        wire += frame(b"last", mask=_mask())
        payloads += [b"part1-part2-part3", "text é".encode(), b"last"]
        for at in range(0, len(wire), 1000):  # small writes: frames cut across reads
            conn.sock.sendall(wire[at:at + 1000])
        expected = b"".join(payloads)
        assert conn.recv_exactly(len(expected)) == expected
    finally:
        conn.close()


@pytest.mark.parametrize("bad, code", [
    (frame(b"x", mask=None), 1002),  # unmasked
    (frame(b"x", rsv=2, mask=b"abcd"), 1002),
    (frame(b"x", long_form=126, mask=b"abcd"), 1002),  # length not in its shortest form
    (b"\x82\xff" + struct.pack("!Q", (1 << 20) + 1) + b"abcd", 1009),  # over the limit
])
def test_an_invalid_frame_after_good_ones_gets_its_close_code(target, bad, code):
    """Good frames first (relayed), then an invalid one: the viewer gets the close code."""
    conn = target.connect()
    try:
        conn.send(b"E")
        conn.sock.sendall(frame(b"before", mask=_mask()))
        assert conn.recv_exactly(6) == b"before"
        conn.sock.sendall(bad)
        with pytest.raises(Closed, match=f"close frame {code} "):
            conn.recv_exactly(1)
    finally:
        conn.sock.close()


def test_the_close_handshake_is_answered(target):
    """A viewer's close frame after its data gets the close reply (1000)."""
    conn = target.connect()
    try:
        conn.send(b"E")
        conn.sock.sendall(frame(b"bye", mask=_mask()))
        assert conn.recv_exactly(3) == b"bye"
        conn.sock.sendall(wsframe.encode_close(1000))
        with pytest.raises(Closed, match="close frame 1000 "):
            conn.recv_exactly(1)
    finally:
        conn.sock.close()
