"""
Flow control, measured on the real service's memory: a flood from either side, drained at
10 KB/s by the other, must not make the service buffer it.

Unlike the rest of tests/integration, the service runs in its own process (L{bench.service}:
the real L{ConsoleProxyService} with a fake hypervisor), so that its RSS (VmRSS in
/proc/PID/status) is its own; the VNC server is the benchmark backend (L{bench.backend}).

Bounded run time: the flooding side offers 1 GiB but the test lasts FLOOD_SECONDS. Once the
socket buffers on the path are full (well under a second on loopback), a service without flow
control would read the flood at hundreds of MB/s into memory; with flow control its RSS stays
flat, and the flooding side is held back to a few MiB.
"""

import json
import os
import select
import struct
import subprocess
import sys
import time

import pytest

from bench import proc, wsframe
from bench.clients import ProxyWebSocketTarget
from bench.service import REPO, ServiceProcess

FLOOD = 1 << 30  # what the flooding side offers
RATE = 10_000  # bytes per second the slow side reads
FLOOD_SECONDS = 6.0
RSS_LIMIT = 32 << 20
SAMPLE_EVERY = 0.1


@pytest.fixture
def stack(tmp_path):
    """
    The benchmark backend and the service (subprocesses), stopped at teardown.
    """
    backend = subprocess.Popen([sys.executable, "-m", "bench.backend", "--report"], cwd=REPO,
                               env=dict(os.environ, PYTHONPATH=str(REPO)),
                               stdout=subprocess.PIPE)
    port = int(backend.stdout.readline())
    service = ServiceProcess(f"127.0.0.1:{port}", tmp_path / "service")
    yield backend, service
    service.stop()
    backend.terminate()
    backend.wait(10)
    backend.stdout.close()


def _backend_report(backend, timeout=10):
    """
    The backend's JSON line for the connection that just closed.
    """
    ready, _, _ = select.select([backend.stdout], [], [], timeout)
    assert ready, "the backend did not report the closed connection"
    return json.loads(backend.stdout.readline())


class _RssWatch:
    def __init__(self, pid):
        self.pid = pid
        self.baseline = proc.rss(pid)
        self.peak = self.baseline

    def sample(self):
        self.peak = max(self.peak, proc.rss(self.pid))

    @property
    def growth(self):
        return self.peak - self.baseline


def test_flood_toward_a_slow_viewer_is_not_buffered(stack):
    """
    The VNC server floods (1 GiB offered) while the viewer reads 10 KB/s: the service's RSS
    grows by less than 32 MiB, the server is held back, and the viewer gets the stream intact.
    """
    backend, service = stack
    conn = ProxyWebSocketTarget(service.info).connect(rcvbuf=4096)
    time.sleep(0.3)
    watch = _RssWatch(service.pid)
    conn.send(b"S" + struct.pack("!Q", FLOOD))
    received = bytearray()
    start = time.monotonic()
    while time.monotonic() - start < FLOOD_SECONDS:
        t0 = time.monotonic()
        received += conn.recv_some(int(RATE * SAMPLE_EVERY))
        watch.sample()
        time.sleep(max(0.0, SAMPLE_EVERY - (time.monotonic() - t0)))
    conn.close()
    report = _backend_report(backend)

    assert watch.growth < RSS_LIMIT, f"service RSS grew by {watch.growth >> 20} MiB"
    assert received == bytes(i % 256 for i in range(len(received)))
    assert RATE * FLOOD_SECONDS / 2 < len(received) < 2 * RATE * FLOOD_SECONDS
    assert report["sent"] < 64 << 20, f"the server got {report['sent'] >> 20} MiB out"


def test_flood_from_a_viewer_toward_a_slow_server_is_not_buffered(stack):
    """
    The viewer floods (1 GiB offered, 64 KiB WebSocket messages) while the VNC server reads
    10 KB/s: the service's RSS grows by less than 32 MiB and the viewer is held back.
    """
    backend, service = stack
    conn = ProxyWebSocketTarget(service.info).connect()
    conn.send(b"R" + struct.pack("!I", RATE))
    time.sleep(0.3)
    watch = _RssWatch(service.pid)
    frame = wsframe.encode(bytes(range(256)) * 256)  # one masked 64 KiB message, sent again
    sock = conn.sock
    sock.setblocking(False)
    sent, offset = 0, 0
    start = last_sample = time.monotonic()
    while time.monotonic() - start < FLOOD_SECONDS and sent < FLOOD:
        _, writable, _ = select.select([], [sock], [], SAMPLE_EVERY)
        if writable:
            try:
                n = sock.send(memoryview(frame)[offset:])
            except BlockingIOError:
                n = 0
            sent += n
            offset = (offset + n) % len(frame)
        if time.monotonic() - last_sample >= SAMPLE_EVERY:
            watch.sample()
            last_sample = time.monotonic()
    watch.sample()
    sock.close()

    assert watch.growth < RSS_LIMIT, f"service RSS grew by {watch.growth >> 20} MiB"
    assert sent < 64 << 20, f"the viewer got {sent >> 20} MiB out"
