"""
The measures. Each takes the running L{bench.run.Bench} (targets, service and websockify
processes, sizes) and returns L{Row}s: one value per target per repeated run, so the report can
print a median and a spread beside the same run's baseline.

Repeated runs interleave the targets (direct, proxy, websockify, then again in a rotated order),
so that load from other users of a shared machine falls on all of them alike.
"""

import asyncio
import statistics
import struct
import time
from dataclasses import dataclass, field

from bench import proc, wsframe

KEYSTROKE = b"k" * 16


class Skip(Exception):
    """
    A measure (or one target of it) cannot run in this build; the message says why.
    """


@dataclass
class Row:
    """
    One line of the report.

    @ivar values: target name -> list of per-run values.
    @ivar better: C{"higher"} or C{"lower"}: which way is good.
    @ivar target: C{(text, check)} where C{check(row)} returns True, False or None (not
        applicable in this run).
    """

    measure: str
    unit: str
    better: str
    values: dict = field(default_factory=dict)
    target: tuple = ("", None)
    note: str = ""

    def add(self, name, value):
        self.values.setdefault(name, []).append(value)

    def median(self, name):
        values = self.values.get(name)
        return statistics.median(values) if values else None


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def _rotations(targets, repeats):
    for r in range(repeats):
        k = r % len(targets)
        yield targets[k:] + targets[:k]


def _cpu(bench, name):
    """
    CPU seconds used so far by the process serving target C{name} (None for direct).
    """
    pid = bench.server_pid(name)
    if pid is None:
        return None
    return proc.tree_total(pid, proc.cpu_seconds)


# -- 1. bulk throughput -------------------------------------------------------------------------

def bulk(bench):
    size = bench.bulk_bytes
    mb = size / 1e6
    rate = Row(f"bulk backend->client, {size >> 20} MiB", "MB/s", "higher",
               target=("WS >= 50% direct and >= 2x websockify", _bulk_target),
               note="direct TCP is the backend measured by the same client: what the backend "
                    "and client can do, so a lower figure elsewhere is the server's")
    cpu = Row("server CPU per GB moved", "s/GB", "lower")
    client = Row("bench client CPU while reading", "% of wall", "lower",
                 note="below 100%: the client was not the bottleneck")
    for order in _rotations(bench.targets, bench.repeats):
        for target in order:
            conn = target.connect()
            try:
                before = _cpu(bench, target.name)
                c0 = time.process_time()
                t0 = time.perf_counter()
                conn.send(b"S" + struct.pack("!Q", size))
                conn.sink(size)
                wall = time.perf_counter() - t0
                c1 = time.process_time()
                rate.add(target.name, mb / wall)
                client.add(target.name, 100 * (c1 - c0) / wall)
                if before is not None:
                    cpu.add(target.name, (_cpu(bench, target.name) - before) / (size / 1e9))
            finally:
                conn.close()
    return [rate, cpu, client]


def _bulk_target(row):
    ws, direct, wsfy = (row.median(n) for n in ("websocket", "direct", "websockify"))
    if ws is None or direct is None:
        return None
    ok = ws >= 0.5 * direct
    if wsfy is not None:
        ok = ok and ws >= 2 * wsfy
    return ok


# -- 1b. upload (viewer to VNC server) --------------------------------------------------------

UPLOAD_FRAME = 4096


def upload(bench):
    """
    The client sends C{upload_bytes} to the backend, as a viewer pasting or uploading does:
    on a WebSocket, in masked binary frames of 4 KiB (built before the clock starts); raw
    elsewhere. Timed from the first byte to the backend's "done".
    """
    size = bench.upload_bytes
    rate = Row(f"upload client->backend, {size >> 20} MiB in {UPLOAD_FRAME // 1024} KiB frames",
               "MB/s", "higher",
               target=("WS >= 2x websockify and >= 0.8x xvpvnc", _upload_target))
    cpu = Row("server CPU per GB uploaded", "s/GB", "lower")
    payload = bytes(range(256)) * (UPLOAD_FRAME // 256)
    block_frames = 256  # 1 MiB of payload per block
    for order in _rotations(bench.targets, bench.repeats):
        for target in order:
            conn = target.connect()
            try:
                if conn.websocket:
                    block = b"".join(wsframe.encode(payload) for _ in range(block_frames))
                else:
                    block = payload * block_frames
                blocks = size // (len(payload) * block_frames)
                conn.send(b"U" + struct.pack("!Q", blocks * len(payload) * block_frames))
                before = _cpu(bench, target.name)
                sendall = conn.sock.sendall
                t0 = time.perf_counter()
                for _ in range(blocks):
                    sendall(block)
                if conn.recv_exactly(1) != b"D":
                    raise RuntimeError("the backend did not confirm the upload")
                wall = time.perf_counter() - t0
                rate.add(target.name, size / 1e6 / wall)
                if before is not None:
                    cpu.add(target.name, (_cpu(bench, target.name) - before) / (size / 1e9))
            finally:
                conn.close()
    return [rate, cpu]


def _upload_target(row):
    ws, xvp, wsfy = (row.median(n) for n in ("websocket", "xvpvnc", "websockify"))
    if ws is None or xvp is None:
        return None
    return ws >= 0.8 * xvp and (wsfy is None or ws >= 2 * wsfy)


# -- 2. keystroke round trips -------------------------------------------------------------------

def round_trip(bench):
    count = bench.rtt_count
    p50 = Row(f"round trip, 16 B messages, p50 ({count}/run)", "us", "lower",
              target=("WS p50 <= xvpvnc + 15 us", _rtt_target))
    p99 = Row("round trip, 16 B messages, p99", "us", "lower",
              target=("WS p99 <= 0.8x websockify's", _rtt_p99_target))
    cpu = Row("server CPU per round trip", "us", "lower",
              note="the server's own cost, less sensitive than latency to a busy machine")
    for order in _rotations(bench.targets, bench.repeats):
        for target in order:
            conn = target.connect()
            try:
                conn.send(b"E")
                for _ in range(50):  # warm up
                    conn.send(KEYSTROKE)
                    conn.recv_exactly(16)
                before = _cpu(bench, target.name)
                samples = []
                clock = time.perf_counter
                send, recv = conn.send_raw, conn.recv_exactly
                wires = wsframe.prepared(KEYSTROKE, conn.websocket)
                for i in range(count):
                    wire = wires[i % len(wires)]
                    t0 = clock()
                    send(wire)
                    recv(16)
                    samples.append(clock() - t0)
                if before is not None:
                    cpu.add(target.name, (_cpu(bench, target.name) - before) / count * 1e6)
                samples.sort()
                p50.add(target.name, percentile(samples, 50) * 1e6)
                p99.add(target.name, percentile(samples, 99) * 1e6)
            finally:
                conn.close()
    return [p50, p99, cpu]


def _rtt_target(row):
    ws, xvp = row.median("websocket"), row.median("xvpvnc")
    return None if ws is None or xvp is None else ws <= xvp + 15


def _rtt_p99_target(row):
    ws, wsfy = row.median("websocket"), row.median("websockify")
    return None if ws is None or wsfy is None else ws <= 0.8 * wsfy


# -- 3. session set-up --------------------------------------------------------------------------

#: Set-ups whose server CPU is counted, per target and run (enough for /proc's 10 ms ticks).
CPU_SETUPS = 200


def setup_time(bench):
    count = bench.setup_count
    p50 = Row(f"set-up, connect to ServerInit, p50 ({count}/run)", "ms", "lower",
              note="token check included; tokens are minted before the clock starts",
              target=("WS <= 2 ms, xvpvnc <= 1.5 ms", _setup_target))
    p99 = Row("set-up, connect to ServerInit, p99", "ms", "lower")
    cpu = Row("server CPU per set-up (and its close)", "us", "lower",
              note="the server's own cost, less sensitive than latency to a busy machine; "
                   f"{CPU_SETUPS} set-ups in a row, their tokens minted first; /proc counts in 10 "
                   "ms ticks, so +-5%")
    for order in _rotations(bench.targets, bench.repeats):
        for target in order:
            samples = []
            for _ in range(count):
                ticket = target.prepare()
                t0 = time.perf_counter()
                conn = target.connect(ticket)
                samples.append(time.perf_counter() - t0)
                conn.close()
            if _cpu(bench, target.name) is not None:
                # Apart, so that the CPU counts no token minting: the same set-ups, the tokens
                # minted first.
                tickets = [target.prepare() for _ in range(CPU_SETUPS)]
                time.sleep(0.05)
                before = _cpu(bench, target.name)
                for ticket in tickets:
                    target.connect(ticket).close()
                time.sleep(0.05)  # the last close reaches the server
                cpu.add(target.name, (_cpu(bench, target.name) - before) / CPU_SETUPS * 1e6)
            samples.sort()
            p50.add(target.name, percentile(samples, 50) * 1e3)
            p99.add(target.name, percentile(samples, 99) * 1e3)
    return [p50, p99, cpu]


def _setup_target(row):
    ws, xvp = row.median("websocket"), row.median("xvpvnc")
    if ws is None and xvp is None:
        return None
    return (ws is None or ws <= 2.0) and (xvp is None or xvp <= 1.5)


# -- 4. memory of idle sessions -----------------------------------------------------------------

async def _open_many(target, tickets, parallel=32, rfb=True):
    gate = asyncio.Semaphore(parallel)
    conns = []

    async def one(ticket):
        async with gate:
            conns.append(await target.aconnect(ticket, rfb=rfb))

    results = await asyncio.gather(*(one(t) for t in tickets), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    return conns, errors


def idle_memory(bench):
    """
    RSS growth of the serving process with N idle sessions, divided by N. Each run uses a fresh
    service process (the first sessions' one-time costs are paid by a warm-up of 20 sessions
    before the baseline is read). websockify forks a process per connection: its cost is the
    growth of the PSS summed over its process tree, with fewer sessions (see the note).
    """
    row = Row(f"RSS per idle session at {bench.idle_sessions} sessions", "KiB", "lower",
              target=("<= 64 KiB", lambda r: None if r.median("websocket") is None
                      else r.median("websocket") <= 64))
    total = Row(f"service RSS with {bench.idle_sessions} idle sessions", "MiB", "lower")
    for _ in range(bench.memory_repeats):
        for name in [target.name for target, _, _ in bench.memory_targets()]:
            # Looked up again each time: a run restarts the service (new ports, new targets).
            target, measure, n = next(t for t in bench.memory_targets() if t[0].name == name)
            pid = bench.server_pid(target.name)

            async def run():
                warm, errors = await _open_many(target, [target.prepare() for _ in range(20)])
                for conn in warm:
                    conn.close()
                await asyncio.sleep(0.5)
                before = proc.tree_total(pid, measure)
                # Minted after the baseline: a session's grant is part of what it costs.
                tickets = [target.prepare() for _ in range(n)]
                conns, errors = await _open_many(target, tickets)
                if errors:
                    raise RuntimeError(f"{len(errors)} of {n} sessions failed: {errors[0]!r}")
                await asyncio.sleep(1.0)
                after = proc.tree_total(pid, measure)
                for conn in conns:
                    conn.close()
                await asyncio.sleep(0.5)
                return before, after

            before, after = asyncio.run(run())
            row.add(target.name, (after - before) / n / 1024)
            total.add(target.name, after / 2**20)
            bench.after_memory_run(target.name)
    if bench.websockify_idle_sessions != bench.idle_sessions and "websockify" in row.values:
        row.note = (f"websockify: PSS of its process tree, {bench.websockify_idle_sessions} "
                    f"sessions (one forked process each)")
    return [row, total]


# -- 4b. scale: many idle WebSocket sessions, and a storm of connections ----------------------

def scale(bench):
    """
    One fresh service (fake hypervisor, C{scale_domains} domains, sessions spread over them):
    a storm of C{storm_sessions} WebSocket connections opened at once (all must reach their
    ServerInit; the time to the last one), closed; then C{scale_sessions} idle WebSocket
    sessions opened 64 at a time and held: the service's RSS growth and descriptors per
    session.
    """
    n, storm_n = bench.scale_sessions, bench.storm_sessions
    per = Row(f"RSS per idle WS session at {n:,} sessions", "KiB", "lower",
              target=("<= 32 KiB", lambda r: _at_most(r, "websocket", 32)))
    total = Row(f"service RSS with {n:,} idle WS sessions", "MiB", "lower")
    fds = Row(f"service descriptors per idle WS session at {n:,}", "fd", "lower")
    storm = Row(f"storm: {storm_n:,} WS connections at once, time to the last ServerInit",
                "s", "lower", target=("all succeed", None))
    failed = Row(f"storm: connections of {storm_n:,} that failed", "count", "lower",
                 target=("0", lambda r: _at_most(r, "websocket", 0)))
    idle_failed = Row(f"idle sessions of {n:,} that failed to open (64 at a time)", "count",
                      "lower", target=("0", lambda r: _at_most(r, "websocket", 0)))
    service, target = bench.scale_service()
    try:
        pid = service.pid
        tickets = target.prepare_many(storm_n + n)

        async def run():
            t0 = time.perf_counter()
            conns, errors = await _open_many(target, tickets[:storm_n], parallel=storm_n)
            storm.add("websocket", time.perf_counter() - t0)
            failed.add("websocket", len(errors))
            if errors:
                failed.note = f"first failure: {errors[0]!r}"
            for conn in conns:
                conn.close()
            await asyncio.sleep(2.0)
            rss0, fds0 = proc.rss(pid), proc.descriptors(pid)
            conns, errors = await _open_many(target, tickets[storm_n:], parallel=64)
            idle_failed.add("websocket", len(errors))
            if errors:
                idle_failed.note = f"first failure: {errors[0]!r}"
            await asyncio.sleep(2.0)
            rss1, fds1 = proc.rss(pid), proc.descriptors(pid)
            for conn in conns:
                conn.close()
            await asyncio.sleep(1.0)
            return rss0, rss1, fds0, fds1

        rss0, rss1, fds0, fds1 = asyncio.run(run())
        held = n - idle_failed.values["websocket"][0]
        per.add("websocket", (rss1 - rss0) / held / 1024)
        total.add("websocket", rss1 / 2**20)
        fds.add("websocket", (fds1 - fds0) / held)
    finally:
        service.stop()
    storm.note = ("one asyncio client opens them all at once, from one address (the "
                  "service's per-address cap on unfinished requests is lifted for this measure)")
    return [storm, failed, idle_failed, per, total, fds]


def _at_most(row, name, limit):
    value = row.median(name)
    return None if value is None else value <= limit


# -- 5. many active sessions --------------------------------------------------------------------

def active_sessions(bench):
    n, duration = bench.active_sessions, bench.active_seconds
    rate = Row(f"{n} active sessions: aggregate 16 B round trips", "msg/s", "higher",
               note="one message in flight per session; one asyncio client process",
               target=("WS >= 0.8x xvpvnc", _active_target))
    p99 = Row(f"{n} active sessions: p99 round trip", "ms", "lower")
    cpu = Row(f"{n} active sessions: server CPU per round trip", "us", "lower",
              note="websockify forks a process per session: on a busy shared machine its 100 "
                   "processes get 100 shares of the CPU, one consoleproxy process gets one")
    client = Row(f"{n} active sessions: bench client CPU", "% of wall", "lower",
                 note="near 100%: the one client process, not the server, set the rate")
    for order in _rotations(bench.targets, bench.active_repeats):
        for target in order:
            tickets = [target.prepare() for _ in range(n)]

            async def run():
                conns, errors = await _open_many(target, tickets)
                if errors:
                    raise RuntimeError(f"{len(errors)} of {n} sessions failed: {errors[0]!r}")
                for conn in conns:
                    conn.write(b"E")
                latencies = []
                stop_at = time.perf_counter() + duration

                async def loop(conn):
                    clock = time.perf_counter
                    wires = wsframe.prepared(KEYSTROKE, conn.websocket)
                    sent = 0
                    while True:
                        t0 = clock()
                        if t0 >= stop_at:
                            return
                        conn.write_raw(wires[sent % len(wires)])
                        sent += 1
                        await conn.read_exactly(16)
                        latencies.append(clock() - t0)

                t0 = time.perf_counter()
                c0 = time.process_time()
                cpu0 = _cpu(bench, target.name)
                await asyncio.gather(*(loop(c) for c in conns))
                wall = time.perf_counter() - t0
                client.add(target.name, (time.process_time() - c0) / wall * 100)
                if cpu0 is not None:
                    cpu.add(target.name, (_cpu(bench, target.name) - cpu0) / len(latencies) * 1e6)
                for conn in conns:
                    conn.close()
                await asyncio.sleep(0.2)
                return latencies, wall

            latencies, wall = asyncio.run(run())
            latencies.sort()
            rate.add(target.name, len(latencies) / wall)
            p99.add(target.name, percentile(latencies, 99) * 1e3)
    return [rate, p99, cpu, client]


def _active_target(row):
    ws, xvp = row.median("websocket"), row.median("xvpvnc")
    return None if ws is None or xvp is None else ws >= 0.8 * xvp


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
            [sys.executable, "-c", "import sys; from bench.measures import _guest_main; "
             "_guest_main(*map(int, sys.argv[1:]))", str(bench.serial_leader),
             str(size), str(rate)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            pass_fds=(bench.serial_leader,), text=True)

    for _ in range(bench.serial_repeats):
        guest = start_guest()
        cpu0 = _cpu(bench, "websocket")
        try:
            writer_seconds = float(guest.communicate("go\n", timeout=30 + size / 1e5)[0])
        finally:
            if guest.poll() is None:
                guest.kill()
                guest.wait()
        time.sleep(0.3)  # the last PTY buffer's worth, read and logged
        alone.add("websocket", mb / writer_seconds)
        alone_cpu.add("websocket", (_cpu(bench, "websocket") - cpu0) / mb)

        tickets = [api.mint("serial", read_only=i > 0) for i in range(n)]
        guest = start_guest(bench.serial_rate)

        async def run():
            conns, errors = await _open_many(target, tickets, rfb=False)
            if errors:
                raise RuntimeError(f"{len(errors)} of {n} viewers failed: {errors[0]!r}")
            viewers = [_SerialViewer(c, expected) for c in conns]
            await asyncio.sleep(0.2)
            rss0 = peak = proc.rss(pid)
            cpu0, c0 = _cpu(bench, "websocket"), time.process_time()
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
            cpu1, c1 = _cpu(bench, "websocket"), time.process_time()
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


MEASURES = {
    "bulk": bulk,
    "upload": upload,
    "rtt": round_trip,
    "setup": setup_time,
    "memory": idle_memory,
    "scale": scale,
    "active": active_sessions,
    "serial": serial_fanout,
}
