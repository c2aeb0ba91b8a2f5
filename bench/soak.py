"""
The soak: many concurrent console sessions with steady keystroke traffic for a fixed time,
watching the service for leaks and lost sessions. Not a benchmark: a pass/fail run.

    python -m bench.soak [--sessions 1000] [--duration 600] [--json FILE]

It starts the bench backend (L{bench.backend}, an RFB server that echoes) and the real service
(L{bench.service}: a fake hypervisor with one VNC domain per two VNC sessions, the product's
limit of 2 per instance, and serial domains whose PTYs this process holds, playing a guest that
echoes what is typed). Then it opens the sessions, in a mix: most over the console WebSocket
(RFB through the proxy), some over the xvpvnc port, a few serial WebSocket viewers (on each
serial domain one interactive writer and read-only watchers). Every writing session sends a
16-byte message (C{#SSSSS:QQQQQQQQ\\n}: session and sequence numbers) every C{--interval}
seconds, on average, and checks its echo byte for byte; serial watchers check that the lines
they see are whole and consecutive. A fraction of the sessions (C{--churn}) closes and
reconnects with a freshly minted token every C{--churn-period} seconds, on average.

Every few seconds it samples the service's RSS (VmRSS) and open descriptors (/proc/PID/fd).
At the end it stops the traffic, compares its count of open sessions with the service's
(C{/metrics}), closes every session and checks that the service's descriptors return to where
they were before the sessions opened. The verdict (L{bench.soak_verdict.verdict}) fails when:

    - RSS grew from the first minute after the warm-up (L{bench.soak_verdict.windows}) to the
      last minute by more than RSS_GROWTH_MIB or RSS_GROWTH_FRACTION, whichever is larger
      (window medians);
    - open descriptors grew between the same windows by more than FD_GROWTH, or are more than
      FD_GROWTH above their pre-session count once every session is closed;
    - a session is unaccounted for (opened != closed cleanly + open at the end + dropped) or
      dropped (closed by the far end, or failed), an echo differed, a reconnect was refused;
    - the service's counters disagree with the client's (open sessions by console type, tokens
      issued and redeemed), or it still counts sessions after every one was closed.

The exit status is 0 when the verdict passes, 1 when it fails. The whole run is bounded: a
watchdog ends it (and its processes) at C{--duration} + HARD_MARGIN seconds whatever happens.

This module is the command and the run's phases (L{Soak}); the sessions and their traffic are
L{bench.soak_sessions}, the guests behind the serial domains L{bench.soak_guest}, what is read
of the service L{bench.soak_probes}, the verdict L{bench.soak_verdict} and the printed report
L{bench.soak_report}.
"""

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from bench import proc
from bench.service import REPO, ServiceProcess, raise_fd_limit
from bench.soak_guest import GuestEcho
from bench.soak_probes import by_type, descriptor_kinds, descriptors, kinds_diff, scrape
from bench.soak_report import report
from bench.soak_sessions import WATCHERS_PER_SERIAL, Sessions, plan
from bench.soak_verdict import FD_GROWTH, Sample, verdict

HARD_MARGIN = 300.0  # seconds beyond --duration: opening, closing and a slow machine
OPEN_PARALLEL = 16  # half the per-address caps on connections mid-handshake ([http], [xvpvnc])


class Soak(Sessions):
    """
    A run: the L{Sessions} and their phases (waiting for the guests' banners, opening every
    session, traffic for C{--duration}, comparing the accounts with the service's, closing
    everything), with the samples of the service taken meanwhile.

    @param echo: the L{GuestEcho} behind the serial domains.
    """

    def __init__(self, args, info, echo):
        super().__init__(args, info)
        self.echo = echo
        self.samples = []

    def sample(self):
        pid = self.info["pid"]
        self.samples.append(Sample(round(self.now(), 2), proc.rss(pid), descriptors(pid),
                                   sum(self.open_now.values()), self.tally.messages))

    async def _sampler(self, every):
        while True:
            self.sample()
            await asyncio.sleep(every)

    async def _progress(self, every):
        while True:
            await asyncio.sleep(every)
            s = self.samples[-1]
            print(f"  {s.t:6.0f} s  RSS {s.rss / 2**20:6.1f} MiB  fds {s.fds:5d}  open {s.open:5d}"
                  f"  messages {s.messages:8d}  churns {self.tally.churns:5d}  dropped "
                  f"{len(self.tally.dropped)}  integrity errors "
                  f"{len(self.tally.integrity_errors)}  load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)

    async def run(self):
        args, loop = self.args, asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.echo.start(loop)
        pid = self.info["pid"]
        # The banners captured: the console logs are open, as on a host whose guests booted.
        banners = len(self.echo.ptys) * len(GuestEcho.BANNER)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = await asyncio.to_thread(scrape, self.info["api_url"])
            if metrics.get(("consoleproxy_serial_bytes_captured", ""), 0) >= banners:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        fds_before = descriptors(pid)
        kinds_before = descriptor_kinds(pid)
        opening = self._t0 = time.monotonic()
        sampler = asyncio.create_task(self._sampler(args.sample_every))
        gate = asyncio.Semaphore(OPEN_PARALLEL)

        async def open_one(slot):
            async with gate:
                await self._open(slot)

        await asyncio.gather(*(open_one(s) for s in self.slots))
        self.opening_seconds = time.monotonic() - opening
        print(f"  {sum(self.open_now.values())} sessions open in {self.opening_seconds:.1f} s "
              f"({self.open_now}); traffic for {args.duration:g} s", file=sys.stderr, flush=True)
        self._t0 = time.monotonic()
        for sample in self.samples:  # taken while opening: negative times
            sample.t = round(sample.t - self.opening_seconds, 2)
        progress = asyncio.create_task(self._progress(max(args.duration / 10, 5)))
        tasks = [asyncio.create_task(self.run_slot(s)) for s in self.slots]
        await asyncio.sleep(args.duration)
        self.sample()
        self._stop.set()
        await asyncio.gather(*tasks)
        progress.cancel()
        sampler.cancel()
        self.traffic_seconds = self.now()
        # Everything quiet: the service's count of open sessions must be the client's.
        live = [s for s in self.slots if s.conn is not None]
        tally = self.tally
        tally.open_at_end = len(live)
        for slot in live:
            tally.open_by_type[slot.console_type] = tally.open_by_type.get(slot.console_type,
                                                                           0) + 1
        metrics = await asyncio.to_thread(scrape, self.info["api_url"])
        tally.server_open = by_type(metrics, "consoleproxy_sessions")
        tally.server_issued = by_type(metrics, "consoleproxy_tokens_issued")
        tally.server_consumed = by_type(metrics, "consoleproxy_tokens_consumed")
        # Close everything; the service's descriptors return to where they were.
        await asyncio.gather(*(self._close(s, final=True) for s in live))
        for api in self._all_apis:
            api.close()
        fds_after_close = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            metrics = await asyncio.to_thread(scrape, self.info["api_url"])
            after = by_type(metrics, "consoleproxy_sessions")
            fds_after_close = descriptors(pid)
            if not any(after.values()) and fds_after_close - fds_before <= FD_GROWTH:
                break
        tally.server_open_after_close = after
        self.descriptors_changed = kinds_diff(kinds_before, descriptor_kinds(pid))
        self.echo.stop(loop)
        return fds_before, fds_after_close


def _watchdog(seconds, processes):
    """
    End the run (and its processes) after C{seconds}, whatever it is doing.
    """
    def expire():
        print(f"soak: hard deadline of {seconds:.0f} s reached: stopping", file=sys.stderr,
              flush=True)
        for p in processes():
            if p is not None and p.poll() is None:
                p.kill()
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Soak: many concurrent console sessions with steady traffic and churn for "
                    "a fixed time; fails on RSS or descriptor growth and on lost sessions.")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds of traffic once every session is open")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="mean seconds between a session's messages")
    parser.add_argument("--churn", type=float, default=0.1,
                        help="fraction of the sessions that close and reconnect")
    parser.add_argument("--churn-period", type=float, default=30.0,
                        help="mean seconds a churning session lives")
    parser.add_argument("--sample-every", type=float, default=None,
                        help="seconds between RSS/descriptor samples (default: duration/120, "
                             "between 0.5 and 5)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of traffic before the baseline window (default: 40%% of "
                             "the duration, at most 240)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.sample_every is None:
        args.sample_every = min(5.0, max(0.5, args.duration / 120))
    raise_fd_limit()
    websocket, xvpvnc, serial_domains = plan(args.sessions)
    echo = GuestEcho(serial_domains)
    workdir = Path(tempfile.mkdtemp(prefix="consoleproxy-soak-"))
    backend = service = None
    watchdog = _watchdog(args.duration + HARD_MARGIN,
                         lambda: [backend, service and service.process])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before, started = os.getloadavg(), time.monotonic()
    try:
        backend = subprocess.Popen([sys.executable, "-m", "bench.backend"], cwd=REPO,
                                   env=dict(os.environ, PYTHONPATH=str(REPO)),
                                   stdout=subprocess.PIPE)
        port = int(backend.stdout.readline())
        service = ServiceProcess(
            f"127.0.0.1:{port}", workdir / "service",
            settings=["sessions.max_vnc_sessions=2", "tokens.token_ttl=180"],
            domains=max(1, math.ceil((websocket + xvpvnc) / 2)),
            serial_ptys=[pty.path for pty in echo.ptys])
        soak = Soak(args, service.info, echo)
        fds_before, fds_after_close = asyncio.run(soak.run())
    finally:
        if service is not None:
            service.stop()
        if backend is not None and backend.poll() is None:
            backend.terminate()
            try:
                backend.wait(10)
            except subprocess.TimeoutExpired:
                backend.kill()
                backend.wait()
        if backend is not None:
            backend.stdout.close()
        echo.close()
        watchdog.cancel()
    failures, figures = verdict(soak.samples, soak.tally, args.duration, fds_before,
                                fds_after_close, warmup=args.warmup)
    load_after = os.getloadavg()
    header = (f"consoleproxy soak: {args.sessions} sessions ({websocket} WebSocket, {xvpvnc} "
              f"xvpvnc, {serial_domains} serial domains x {1 + WATCHERS_PER_SERIAL} viewers), "
              f"{args.duration:g} s of traffic (a message every {args.interval:g} s per "
              f"session, {args.churn:.0%} churning every {args.churn_period:g} s), "
              f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} at start, "
              f"{load_after[0]:.1f} at end; opening took {soak.opening_seconds:.1f} s, the run "
              f"{time.monotonic() - started:.0f} s")
    print(report(soak, figures, failures, header))
    if failures:
        print(f"the service's log: {workdir / 'service' / 'service.log'}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"header": header, "args": vars(args), "failures": failures, "figures": figures,
             "tally": asdict(soak.tally), "samples": [asdict(s) for s in soak.samples],
             "load_before": load_before, "load_after": load_after,
             "opening_seconds": soak.opening_seconds,
             "descriptors_changed": soak.descriptors_changed}, indent=1, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
