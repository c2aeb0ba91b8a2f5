"""
The serial fan-out measure: one source writing to a PTY, the service capturing it and fanning
it out to many WebSocket viewers, each checked byte for byte; and the capture alone.
"""

import asyncio
import time

from bench import proc
from bench.rows import Row, Skip, open_many, server_cpu

# -- 6. serial fan-out ---------------------------------------------------------------------------

# Guest output: deterministic, printable, with line breaks (and no repeat for the checks to miss).
_PRINTABLE = bytes(range(0x21, 0x7F))
_TO_TEXT = bytes(_PRINTABLE[i % len(_PRINTABLE)] if i % 64 else 0x0A for i in range(256))


def guest_output(size, seed=6):
    """
    The bytes the fan-out's source writes: the same in the writer process and the checker.
    """
    import random

    return random.Random(seed).randbytes(size).translate(_TO_TEXT)


def _guest_main(fd, size, rate=0):
    """
    The fan-out's source, in its own process (python -c): on a line on stdin, write
    C{guest_output(size)} to the PTY leader C{fd} as fast as the PTY takes it, or paced at
    C{rate} bytes per second (in 16 KiB writes), then print the seconds that took.
    """
    import os
    import sys

    data = memoryview(guest_output(size))
    os.set_blocking(fd, True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    sent = 0
    while sent < size:
        if rate:
            ahead = t0 + sent / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        sent += os.write(fd, data[sent:sent + (16384 if rate else 1 << 20)])
    print(time.perf_counter() - t0, flush=True)


class _SerialViewer:
    """
    Checks one viewer's stream against the source's bytes as it arrives (a memcmp per piece).

    @ivar good: bytes received in order and equal to the source's, up to the first difference.
    """

    def __init__(self, conn, expected):
        self.conn = conn
        self._expected = memoryview(expected)
        self.good = 0
        self.received = 0
        self.differs = False
        conn.on_payload = self._piece

    def _piece(self, piece):
        n = len(piece)
        self.received += n
        if not self.differs:
            if piece == self._expected[self.good:self.good + n]:
                self.good += n
            else:
                self.differs = True

    @property
    def slow_closed(self):
        return self.conn.error is not None and "4013" in str(self.conn.error)


def serial_fanout(bench):
    """
    One source writing fast to the viewers of one serial console: a process playing QEMU writes
    C{serial_bytes} to the leader side of a PTY as fast as it takes them; the service captures
    the follower side (a fake hypervisor domain, as it captures a real guest's /dev/pts/N) and
    fans the output out to C{serial_viewers} WebSocket viewers (one writer, the rest read-only),
    each checked byte for byte. The run ends when every viewer has every byte, or was closed.
    """
    instance = (bench.info.get("serial_instances") or [None])[0]
    if not instance:
        raise Skip("serial fan-out: the service has no serial console (bench/service.py "
                   "--serial-pty)")
    import os
    import subprocess
    import sys

    from bench.clients import ProxyWebSocketTarget, TokenApi
    from bench.service import REPO

    size, n = bench.serial_bytes, bench.serial_viewers
    mb = size / 1e6
    lost = Row(f"serial fan-out, {size >> 20} MiB to {n} viewers: bytes lost per viewer (max)",
               "bytes", "lower", target=("0", lambda r: _all_zero(r)),
               note=f"one source process writes to a PTY at {bench.serial_rate / 1e6:g} MB/s "
                    "(about 14 times what a TCG guest's UART printed here, 90 times a 115200-baud "
                    "line; capture alone: as fast as the PTY takes it); the service "
                    "reads the other side (a fake hypervisor domain's serial console) and fans out "
                    "to WebSocket viewers (1 writer + read-only), each checked byte for byte; a "
                    "viewer that received bytes differing from the source's counts as all lost "
                    "from there; WebSocket column only (no direct or websockify equivalent)")
    slow = Row("serial fan-out: viewers closed as too slow (4013)", "viewers", "lower",
               target=("0", lambda r: _all_zero(r)))
    rate = Row("serial fan-out: source rate sustained to all viewers", "MB/s", "higher",
               note="source bytes / time from the first write to the last viewer's last byte")
    fanned = Row("serial fan-out: delivered, summed over viewers", "MB/s", "higher")
    cpu = Row("serial fan-out: service CPU per MB of source output", "s/MB", "lower")
    rss = Row("serial fan-out: service RSS growth during the run (peak)", "MiB", "lower")
    client = Row("serial fan-out: bench client CPU (the viewers)", "% of wall", "lower",
                 note="below 100%: the viewers' process was not the bottleneck")
    waited = Row("serial fan-out: service time waiting for a CPU", "% of wall", "lower",
                 note="runnable but not running (/proc/PID/schedstat): how much of the run the "
                      "process was held back by the machine's other load")
    client_waited = Row("serial fan-out: bench client time waiting for a CPU", "% of wall",
                        "lower")
    alone = Row("serial capture alone (no viewers): source rate", "MB/s", "higher",
                note="the same source and service with no viewer attached (source bytes / the "
                     "writer's time): what the fan-out costs the guest's output rate")
    alone_cpu = Row("serial capture alone: service CPU per MB", "s/MB", "lower")
    expected = guest_output(size)
    target = ProxyWebSocketTarget(bench.info)
    api = TokenApi(bench.info["api_url"], bench.info["key"], instance)
    pid = bench.service.pid

    def start_guest(rate=0):
        return subprocess.Popen(
            [sys.executable, "-c", "import sys; from bench.serialmeasure import _guest_main; "
             "_guest_main(*map(int, sys.argv[1:]))", str(bench.serial_leader),
             str(size), str(rate)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            pass_fds=(bench.serial_leader,), text=True)

    for _ in range(bench.serial_repeats):
        guest = start_guest()
        cpu0 = server_cpu(bench, "websocket")
        try:
            writer_seconds = float(guest.communicate("go\n", timeout=30 + size / 1e5)[0])
        finally:
            if guest.poll() is None:
                guest.kill()
                guest.wait()
        time.sleep(0.3)  # the last PTY buffer's worth, read and logged
        alone.add("websocket", mb / writer_seconds)
        alone_cpu.add("websocket", (server_cpu(bench, "websocket") - cpu0) / mb)

        tickets = [api.mint("serial", read_only=i > 0) for i in range(n)]
        guest = start_guest(bench.serial_rate)

        async def run():
            conns, errors = await open_many(target, tickets, rfb=False)
            if errors:
                raise RuntimeError(f"{len(errors)} of {n} viewers failed: {errors[0]!r}")
            viewers = [_SerialViewer(c, expected) for c in conns]
            await asyncio.sleep(0.2)
            rss0 = peak = proc.rss(pid)
            cpu0, c0 = server_cpu(bench, "websocket"), time.process_time()
            delay0 = proc.run_delay(pid), proc.run_delay(os.getpid())
            t0 = time.perf_counter()
            guest.stdin.write("go\n")
            guest.stdin.flush()
            deadline = t0 + 30 + size / 1e5
            polls = 0
            while any(v.good < size and v.conn.error is None and not v.differs
                      for v in viewers) and time.perf_counter() < deadline:
                await asyncio.sleep(0.005)
                polls += 1
                if polls % 10 == 0:
                    peak = max(peak, proc.rss(pid))
            wall = time.perf_counter() - t0
            cpu1, c1 = server_cpu(bench, "websocket"), time.process_time()
            delays = [(d1 - d0) / wall * 100 for d0, d1 in
                      zip(delay0, (proc.run_delay(pid), proc.run_delay(os.getpid())))]
            peak = max(peak, proc.rss(pid))
            for v in viewers:
                v.conn.close()
            await asyncio.sleep(0.3)
            return viewers, wall, cpu1 - cpu0, c1 - c0, peak - rss0, delays

        try:
            viewers, wall, service_cpu, client_cpu, growth, delays = asyncio.run(run())
            guest.communicate(timeout=30)
        finally:
            if guest.poll() is None:
                guest.kill()
                guest.wait()
        lost.add("websocket", max(size - v.good for v in viewers))
        slow.add("websocket", sum(v.slow_closed for v in viewers))
        rate.add("websocket", mb / wall)
        fanned.add("websocket", sum(v.good for v in viewers) / 1e6 / wall)
        cpu.add("websocket", service_cpu / mb)
        rss.add("websocket", growth / 2**20)
        client.add("websocket", 100 * client_cpu / wall)
        waited.add("websocket", delays[0])
        client_waited.add("websocket", delays[1])
    return [lost, slow, rate, fanned, cpu, rss, client, waited, client_waited, alone, alone_cpu]


def _all_zero(row):
    values = row.values.get("websocket")
    return None if not values else max(values) == 0


