"""
The measures of sessions held: memory per idle session (1,000 on a fresh service), and the
scale measure (a storm of connections at once, then many idle WebSocket sessions).
"""

import asyncio
import time

from bench import proc
from bench.rows import Row, open_many

# -- 4. memory of idle sessions -----------------------------------------------------------------

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
                warm, errors = await open_many(target, [target.prepare() for _ in range(20)])
                for conn in warm:
                    conn.close()
                await asyncio.sleep(0.5)
                before = proc.tree_total(pid, measure)
                # Minted after the baseline: a session's grant is part of what it costs.
                tickets = [target.prepare() for _ in range(n)]
                conns, errors = await open_many(target, tickets)
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
            conns, errors = await open_many(target, tickets[:storm_n], parallel=storm_n)
            storm.add("websocket", time.perf_counter() - t0)
            failed.add("websocket", len(errors))
            if errors:
                failed.note = f"first failure: {errors[0]!r}"
            for conn in conns:
                conn.close()
            await asyncio.sleep(2.0)
            rss0, fds0 = proc.rss(pid), proc.descriptors(pid)
            conns, errors = await open_many(target, tickets[storm_n:], parallel=64)
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


