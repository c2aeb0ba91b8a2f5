"""
The measures (this module: throughput, round trips, set-up, many active sessions; the
others in L{bench.held} and L{bench.serialmeasure}). Each takes the running L{bench.run.Bench} (targets, service and websockify
processes, sizes) and returns L{Row}s: one value per target per repeated run, so the report can
print a median and a spread beside the same run's baseline.

Repeated runs interleave the targets (direct, proxy, websockify, then again in a rotated order),
so that load from other users of a shared machine falls on all of them alike.
"""

import asyncio
import struct
import time

from bench import wsframe
from bench.held import idle_memory, scale
from bench.rows import KEYSTROKE, Row, open_many, percentile, rotations, server_cpu
from bench.serialmeasure import serial_fanout

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
    for order in rotations(bench.targets, bench.repeats):
        for target in order:
            conn = target.connect()
            try:
                before = server_cpu(bench, target.name)
                c0 = time.process_time()
                t0 = time.perf_counter()
                conn.send(b"S" + struct.pack("!Q", size))
                conn.sink(size)
                wall = time.perf_counter() - t0
                c1 = time.process_time()
                rate.add(target.name, mb / wall)
                client.add(target.name, 100 * (c1 - c0) / wall)
                if before is not None:
                    cpu.add(target.name, (server_cpu(bench, target.name) - before) / (size / 1e9))
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
    for order in rotations(bench.targets, bench.repeats):
        for target in order:
            conn = target.connect()
            try:
                if conn.websocket:
                    block = b"".join(wsframe.encode(payload) for _ in range(block_frames))
                else:
                    block = payload * block_frames
                blocks = size // (len(payload) * block_frames)
                conn.send(b"U" + struct.pack("!Q", blocks * len(payload) * block_frames))
                before = server_cpu(bench, target.name)
                sendall = conn.sock.sendall
                t0 = time.perf_counter()
                for _ in range(blocks):
                    sendall(block)
                if conn.recv_exactly(1) != b"D":
                    raise RuntimeError("the backend did not confirm the upload")
                wall = time.perf_counter() - t0
                rate.add(target.name, size / 1e6 / wall)
                if before is not None:
                    cpu.add(target.name, (server_cpu(bench, target.name) - before) / (size / 1e9))
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
    for order in rotations(bench.targets, bench.repeats):
        for target in order:
            conn = target.connect()
            try:
                conn.send(b"E")
                for _ in range(50):  # warm up
                    conn.send(KEYSTROKE)
                    conn.recv_exactly(16)
                before = server_cpu(bench, target.name)
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
                    cpu.add(target.name, (server_cpu(bench, target.name) - before) / count * 1e6)
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
    for order in rotations(bench.targets, bench.repeats):
        for target in order:
            samples = []
            for _ in range(count):
                ticket = target.prepare()
                t0 = time.perf_counter()
                conn = target.connect(ticket)
                samples.append(time.perf_counter() - t0)
                conn.close()
            if server_cpu(bench, target.name) is not None:
                # Apart, so that the CPU counts no token minting: the same set-ups, the tokens
                # minted first.
                tickets = [target.prepare() for _ in range(CPU_SETUPS)]
                time.sleep(0.05)
                before = server_cpu(bench, target.name)
                for ticket in tickets:
                    target.connect(ticket).close()
                time.sleep(0.05)  # the last close reaches the server
                cpu.add(target.name, (server_cpu(bench, target.name) - before) / CPU_SETUPS * 1e6)
            samples.sort()
            p50.add(target.name, percentile(samples, 50) * 1e3)
            p99.add(target.name, percentile(samples, 99) * 1e3)
    return [p50, p99, cpu]


def _setup_target(row):
    ws, xvp = row.median("websocket"), row.median("xvpvnc")
    if ws is None and xvp is None:
        return None
    return (ws is None or ws <= 2.0) and (xvp is None or xvp <= 1.5)


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
    for order in rotations(bench.targets, bench.active_repeats):
        for target in order:
            tickets = [target.prepare() for _ in range(n)]

            async def run():
                conns, errors = await open_many(target, tickets)
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
                cpu0 = server_cpu(bench, target.name)
                await asyncio.gather(*(loop(c) for c in conns))
                wall = time.perf_counter() - t0
                client.add(target.name, (time.process_time() - c0) / wall * 100)
                if cpu0 is not None:
                    cpu.add(target.name, (server_cpu(bench, target.name) - cpu0) / len(latencies) * 1e6)
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

