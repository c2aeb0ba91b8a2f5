"""
Screen updates relayed without a copy (vncproxy.relay.zerocopy), through the real service: a stream
from the VNC server reaches WebSocket and xvpvnc viewers intact, and the service's metrics say
most of it was spliced.

As in test_flow_control, the service runs in its own process (L{bench.service}) in front of
the benchmark backend (L{bench.backend}), which streams the i % 256 pattern on request.
"""

import os
import struct
import subprocess
import sys
import urllib.request

import pytest

from bench.clients import ProxyWebSocketTarget, ProxyXvpTarget
from bench.service import REPO, ServiceProcess
from vncproxy.relay import zerocopy

pytestmark = pytest.mark.skipif(not zerocopy.available(), reason="no os.splice on this platform")

SIZE = 24 << 20


@pytest.fixture(scope="module")
def backend():
    process = subprocess.Popen([sys.executable, "-m", "bench.backend"], cwd=REPO,
                               env=dict(os.environ, PYTHONPATH=str(REPO)),
                               stdout=subprocess.PIPE)
    yield f"127.0.0.1:{int(process.stdout.readline())}"
    process.terminate()
    process.wait(10)
    process.stdout.close()


@pytest.fixture(scope="module")
def service(backend, tmp_path_factory):
    proc = ServiceProcess(backend, tmp_path_factory.mktemp("service"))
    yield proc
    proc.stop()


@pytest.fixture
def copying_service(backend, tmp_path):
    proc = ServiceProcess(backend, tmp_path / "service", settings=["vnc.zero_copy=false"])
    yield proc
    proc.stop()


def _spliced(info):
    with urllib.request.urlopen(info["api_url"] + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("consoleproxy_vnc_bytes_spliced_total "):
                return float(line.split()[1])
    raise AssertionError("no consoleproxy_vnc_bytes_spliced_total in /metrics")


def _expected(n):
    block = bytes(range(256)) * 4096
    return (block * (n // len(block) + 1))[:n]


def _stream_and_echo(info, target):
    conn = target(info).connect()
    try:
        conn.send(b"S" + struct.pack("!Q", SIZE))
        got = conn.recv_exactly(SIZE)
        # keystroke-sized echoes still go both ways after the bulk (by copy, see zerocopy)
        conn.send(b"E")
        echoes = []
        for i in range(5):
            conn.send(b"keystroke-%06d" % i)
            echoes.append(conn.recv_exactly(16))
    finally:
        conn.close()
    assert got == _expected(SIZE)
    assert echoes == [b"keystroke-%06d" % i for i in range(5)]


@pytest.mark.parametrize("target", [ProxyWebSocketTarget, ProxyXvpTarget])
def test_a_screen_stream_arrives_intact_and_mostly_spliced(service, target):
    """24 MiB from the VNC server arrive byte for byte, and most of them went by splice."""
    before = _spliced(service.info)
    _stream_and_echo(service.info, target)
    assert _spliced(service.info) - before > SIZE / 2


def test_zero_copy_can_be_switched_off(copying_service):
    """With [vnc] zero_copy = false the same stream arrives intact and nothing is spliced."""
    _stream_and_echo(copying_service.info, ProxyWebSocketTarget)
    assert _spliced(copying_service.info) == 0
