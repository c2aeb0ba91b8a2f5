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
they were before the sessions opened. The verdict (L{verdict}) fails when:

    - RSS grew from the first minute after the warm-up (L{windows}) to the last minute by
      more than RSS_GROWTH_MIB or RSS_GROWTH_FRACTION, whichever is larger (window medians);
    - open descriptors grew between the same windows by more than FD_GROWTH, or are more than
      FD_GROWTH above their pre-session count once every session is closed;
    - a session is unaccounted for (opened != closed cleanly + open at the end + dropped) or
      dropped (closed by the far end, or failed), an echo differed, a reconnect was refused;
    - the service's counters disagree with the client's (open sessions by console type, tokens
      issued and redeemed), or it still counts sessions after every one was closed.

The exit status is 0 when the verdict passes, 1 when it fails. The whole run is bounded: a
watchdog ends it (and its processes) at C{--duration} + HARD_MARGIN seconds whatever happens.
"""

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import proc, wsframe
from bench.clients import (
    AsyncConn,
    Closed,
    GrantRefused,
    ProxyWebSocketTarget,
    ProxyXvpTarget,
    TokenApi,
    _WebSocketTarget,
)
from bench.service import REPO, ServiceProcess, raise_fd_limit
from tests.support.ptypair import PtyPair

RSS_GROWTH_MIB = 4.0
RSS_GROWTH_FRACTION = 0.05
FD_GROWTH = 10
HARD_MARGIN = 300.0  # seconds beyond --duration: opening, closing and a slow machine
MESSAGE_SIZE = 16
ECHO_TIMEOUT = 30.0
WATCHER_TIMEOUT = 60.0
CLOSE_TIMEOUT = 15.0
OPEN_PARALLEL = 16  # half the per-address caps on connections mid-handshake ([http], [xvpvnc])
WATCHERS_PER_SERIAL = 4
REFUSED_RETRY = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)  # a released slot not seen yet: wait

KINDS = ("websocket", "xvpvnc", "serial-writer", "serial-watcher")
_LINE = re.compile(rb"#(\d{5}):(\d{8})\n")


def message(sid, seq):
    """
    The 16 bytes session C{sid} sends as its message number C{seq}.
    """
    return b"#%05d:%08d\n" % (sid % 100000, seq % 100000000)


# -- the verdict (pure: unit-tested with synthetic samples) ---------------------------------------

@dataclass
class Sample:
    """
    @ivar t: seconds since the traffic started (negative while the sessions were opening).
    """

    t: float
    rss: int
    fds: int
    open: int
    messages: int


@dataclass
class Tally:
    """
    The client's own accounts.

    @ivar opened, closed_clean, open_at_end, dropped: sessions opened, closed cleanly by the
        client (churn), open when the traffic stopped, ended by the far end or failed;
        C{closed_clean_at_end} and C{unclean_at_end}: how the sessions open at the end closed.
    @ivar open_by_type: open sessions at the end, before the final close, by the service's
        console type (C{vnc}, C{serial}).
    @ivar server_open: the service's C{consoleproxy_sessions} at that moment, same keys.
    @ivar server_open_after_close: the same once every session was closed.
    @ivar grants, server_issued: tokens minted by console type, by the client's count and the
        service's; C{opened_by_type}, C{server_consumed}: the same for tokens redeemed.
    """

    opened: int = 0
    closed_clean: int = 0
    open_at_end: int = 0
    closed_clean_at_end: int = 0
    dropped: list = field(default_factory=list)
    unclean_at_end: list = field(default_factory=list)
    integrity_errors: list = field(default_factory=list)
    refused: list = field(default_factory=list)
    refused_retries: int = 0
    churns: int = 0
    messages: int = 0
    watcher_lines: int = 0
    opened_by_type: dict = field(default_factory=dict)
    grants: dict = field(default_factory=dict)
    open_by_type: dict = field(default_factory=dict)
    server_open: dict = field(default_factory=dict)
    server_open_after_close: dict = field(default_factory=dict)
    server_issued: dict = field(default_factory=dict)
    server_consumed: dict = field(default_factory=dict)


def _median(samples, lo, hi, attr):
    values = [getattr(s, attr) for s in samples if lo <= s.t <= hi]
    return statistics.median(values) if values else None


def windows(duration, warmup=None, window=None):
    """
    The baseline and end windows, C{((lo, hi), (lo, hi))} in seconds since the traffic started:
    the first C{window} after C{warmup}, and the last C{window} of the run.

    The default warm-up, 40% of the run up to 4 minutes, covers Python's first full garbage
    collection: until then the reference cycles of closed sessions pile up (about 8 MiB with
    1,000 sessions and 10% churn, over about 3 minutes) and RSS climbs; after it, the memory
    is reused. The default window is a minute (a fifth of shorter runs).
    """
    warmup = min(240.0, duration * 0.4) if warmup is None else warmup
    window = min(60.0, duration / 5) if window is None else window
    return (warmup, warmup + window), (duration - window, duration)


def verdict(samples, tally, duration, fds_before=None, fds_after_close=None, warmup=None,
            window=None):
    """
    Judge a run.

    @param samples: the L{Sample}s, in time order.
    @param fds_before: the service's descriptors before the sessions opened; C{fds_after_close}
        once they were all closed again (each C{None} when not measured).
    @return: C{(failures, figures)}: a list of sentences (empty: passed) and the figures the
        judgement rests on.
    """
    failures = []
    (b_lo, b_hi), (e_lo, e_hi) = windows(duration, warmup, window)
    rss0, rss1 = _median(samples, b_lo, b_hi, "rss"), _median(samples, e_lo, e_hi, "rss")
    fd0, fd1 = _median(samples, b_lo, b_hi, "fds"), _median(samples, e_lo, e_hi, "fds")
    figures = {"baseline_window": (b_lo, b_hi), "end_window": (e_lo, e_hi), "rss_start": rss0,
               "rss_end": rss1, "fds_start": fd0, "fds_end": fd1, "fds_before": fds_before,
               "fds_after_close": fds_after_close}
    if None in (rss0, rss1, fd0, fd1):
        failures.append(f"too few samples to judge growth ({len(samples)} samples)")
    else:
        allowed = max(RSS_GROWTH_MIB * 2**20, RSS_GROWTH_FRACTION * rss0)
        figures["rss_allowed_growth"] = allowed
        if rss1 - rss0 > allowed:
            failures.append(f"RSS grew {(rss1 - rss0) / 2**20:.1f} MiB "
                            f"({rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB; "
                            f"allowed {allowed / 2**20:.1f} MiB)")
        if fd1 - fd0 > FD_GROWTH:
            failures.append(f"open descriptors grew by {fd1 - fd0:g} ({fd0:g} -> {fd1:g}; "
                            f"allowed {FD_GROWTH})")
    if fds_before is not None and fds_after_close is not None \
            and fds_after_close - fds_before > FD_GROWTH:
        failures.append(f"{fds_after_close - fds_before} more descriptors open after every "
                        f"session closed than before any opened ({fds_before} -> "
                        f"{fds_after_close})")
    accounted = tally.closed_clean + tally.open_at_end + len(tally.dropped)
    if tally.opened != accounted:
        failures.append(f"sessions unaccounted for: {tally.opened} opened, {tally.closed_clean} "
                        f"closed cleanly + {tally.open_at_end} open at the end + "
                        f"{len(tally.dropped)} dropped = {accounted}")
    if tally.closed_clean_at_end + len(tally.unclean_at_end) != tally.open_at_end:
        failures.append(f"{tally.open_at_end} sessions open at the end, but "
                        f"{tally.closed_clean_at_end} closed cleanly and "
                        f"{len(tally.unclean_at_end)} not")
    for what, items in (("sessions dropped", tally.dropped),
                        ("sessions not closed cleanly at the end", tally.unclean_at_end),
                        ("integrity errors", tally.integrity_errors),
                        ("sessions refused or failed to open", tally.refused)):
        if items:
            failures.append(f"{len(items)} {what}, first: {items[0]}")
    for what, client, server in (
            ("open sessions", tally.open_by_type, tally.server_open),
            ("tokens issued", tally.grants, tally.server_issued),
            ("tokens redeemed", tally.opened_by_type, tally.server_consumed)):
        for console_type in sorted(set(client) | set(server)):
            mine, theirs = client.get(console_type, 0), server.get(console_type, 0)
            if mine != theirs:
                failures.append(f"{what} ({console_type}): the client counts {mine}, the "
                                f"service {theirs}")
    left = {k: v for k, v in tally.server_open_after_close.items() if v}
    if left:
        failures.append(f"the service still counts sessions after all closed: {left}")
    return failures, figures


# -- the service's side ---------------------------------------------------------------------------

def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def descriptor_kinds(pid):
    """
    What the process's descriptors point at, counted: C{socket}, C{pipe}, C{anon_inode:...}
    or the file's path.
    """
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":", 1)[0] if target.startswith(("socket:", "pipe:")) else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def kinds_diff(before, after):
    """
    The kinds of descriptor whose count changed: {kind: change}.
    """
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after))
            if after.get(k, 0) != before.get(k, 0)}


def scrape(api_url):
    """
    The service's metrics: {(name, console_type or ""): value}.
    """
    with urllib.request.urlopen(api_url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(consoleproxy_\w+?)(?:_total)?(?:\{console_type="(\w+)"\})? (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def by_type(metrics, name):
    return {t: int(v) for (n, t), v in metrics.items() if n == name and t}


class GuestEcho:
    """
    The guest side of the serial domains: each prints L{BANNER} once, then whatever the
    service types on its PTY is printed back.
    """

    BANNER = b"bench guest ready\n"

    def __init__(self, count):
        self.ptys = [PtyPair() for _ in range(count)]
        self._pending = {}

    def start(self, loop):
        for pty in self.ptys:
            self._pending[pty.leader] = bytearray(self.BANNER)
            loop.add_reader(pty.leader, self._readable, loop, pty.leader)
            self._flush(loop, pty.leader)

    def _readable(self, loop, fd):
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            loop.remove_reader(fd)
            return
        self._pending[fd] += data
        self._flush(loop, fd)

    def _flush(self, loop, fd):
        pending = self._pending[fd]
        try:
            n = os.write(fd, pending)
        except BlockingIOError:
            n = 0
        del pending[:n]
        if pending:
            loop.add_writer(fd, self._flush, loop, fd)
        else:
            loop.remove_writer(fd)

    def stop(self, loop):
        for pty in self.ptys:
            if pty.leader is not None:
                loop.remove_reader(pty.leader)
                loop.remove_writer(pty.leader)

    def close(self):
        for pty in self.ptys:
            pty.close()


# -- the sessions ---------------------------------------------------------------------------------

class SerialTarget(_WebSocketTarget):
    """
    A serial console viewer: the grant's C{href} path, then raw console bytes (no RFB).
    """

    name = "serial"

    def __init__(self, info):
        self.port = info["console_port"]

    def _path(self, ticket):
        return ticket

    async def aconnect(self, ticket=None):
        conn = await AsyncConn.open(self.host, self.port)
        await self._aupgrade(conn, ticket)
        return conn


@dataclass
class Slot:
    """
    One session of the mix, reopened when it churns.

    @ivar sid: its number (in its messages).
    @ivar writer: for a watcher, the sid of its instance's writer.
    """

    sid: int
    kind: str
    instance: str
    churn: bool
    writer: int = 0
    seq: int = 0
    conn: object = None

    @property
    def console_type(self):
        return "serial" if self.kind.startswith("serial") else "vnc"


def plan(sessions, serial_fraction=0.05, xvpvnc_fraction=0.15):
    """
    How many sessions of each kind, and on how many domains: C{(websocket, xvpvnc,
    serial_domains)}; each serial domain has one writer and WATCHERS_PER_SERIAL watchers.
    """
    serial_domains = max(1, round(sessions * serial_fraction / (1 + WATCHERS_PER_SERIAL))) \
        if sessions >= 2 * (1 + WATCHERS_PER_SERIAL) else 0
    rest = sessions - serial_domains * (1 + WATCHERS_PER_SERIAL)
    xvpvnc = round(sessions * xvpvnc_fraction) if rest > 1 else 0
    return rest - xvpvnc, xvpvnc, serial_domains


class Soak:
    """
    The client side of a run: the sessions (L{Slot}s), their traffic, the samples of the
    service and the accounts (L{Tally}).

    @param args: the command's options.
    @param info: the service's JSON line (L{bench.service}).
    @param echo: the L{GuestEcho} behind the serial domains.
    """

    def __init__(self, args, info, echo):
        self.args = args
        self.info = info
        self.echo = echo
        self.tally = Tally()
        self.samples = []
        self.open_now = {kind: 0 for kind in KINDS}
        self.targets = {"websocket": ProxyWebSocketTarget(info), "xvpvnc": ProxyXvpTarget(info),
                        "serial-writer": SerialTarget(info),
                        "serial-watcher": SerialTarget(info)}
        self._apis = threading.local()
        self._all_apis = []
        self._stop = None
        self._t0 = None
        self._rng = random.Random(args.seed)
        self.slots = self._slots()

    def _slots(self):
        websocket, xvpvnc, serial_domains = plan(self.args.sessions)
        kinds = ["websocket"] * websocket + ["xvpvnc"] * xvpvnc
        self._rng.shuffle(kinds)
        instances = self.info["instances"]
        slots = [Slot(i + 1, kind, instances[i // 2], False) for i, kind in enumerate(kinds)]
        for instance in self.info["serial_instances"][:serial_domains]:
            writer = len(slots) + 1
            slots.append(Slot(writer, "serial-writer", instance, False))
            for _ in range(WATCHERS_PER_SERIAL):
                slots.append(Slot(len(slots) + 1, "serial-watcher", instance, False, writer))
        for slot in self._rng.sample(slots, round(len(slots) * self.args.churn)):
            slot.churn = True
        return slots

    def now(self):
        return time.monotonic() - self._t0

    # -- tokens and connections --------------------------------------------------------------

    def _api(self):
        api = getattr(self._apis, "api", None)
        if api is None:
            api = self._apis.api = TokenApi(self.info["api_url"], self.info["key"],
                                            self.info["instance"])
            self._all_apis.append(api)
        return api

    def _grant(self, slot):
        body = {"read_only": True} if slot.kind == "serial-watcher" else {}
        answer = self._api().grant(slot.instance, slot.console_type, **body)
        if slot.console_type == "serial":
            return "/" + answer["href"].split("://", 1)[1].split("/", 1)[1]
        return answer["access_token"]

    async def _open(self, slot):
        """
        Mint a token and connect; a refusal (the previous session's slot not released yet) is
        retried a few times, then recorded.
        """
        for delay in REFUSED_RETRY + (None,):
            try:
                ticket = await asyncio.to_thread(self._grant, slot)
                self.tally.grants[slot.console_type] = \
                    self.tally.grants.get(slot.console_type, 0) + 1
                conn = await self.targets[slot.kind].aconnect(ticket)
                break
            except (GrantRefused, wsframe.HandshakeError) as e:
                status = getattr(e, "status", None)
                if status in (409, 429) and delay is not None:
                    self.tally.refused_retries += 1
                    await asyncio.sleep(delay)
                    continue
                self.tally.refused.append(f"{slot.kind} {slot.instance}: {e}")
                return None
            except (OSError, Closed, ValueError, RuntimeError) as e:
                self.tally.refused.append(f"{slot.kind} {slot.instance}: {e!r}")
                return None
        self.tally.opened += 1
        self.tally.opened_by_type[slot.console_type] = \
            self.tally.opened_by_type.get(slot.console_type, 0) + 1
        self.open_now[slot.kind] += 1
        if slot.kind in ("websocket", "xvpvnc"):
            conn.write(b"E")  # the backend echoes from now on
        slot.conn = conn
        return conn

    async def _close(self, slot, final=False):
        """
        End a session as a viewer does: a WebSocket close handshake, or closing the TCP
        connection (xvpvnc); count it closed cleanly, or dropped when the far end had another
        idea.
        """
        conn, slot.conn = slot.conn, None
        self.open_now[slot.kind] -= 1
        dropped = self._unclean if final else self._dropped
        if conn.error is not None:
            dropped(slot, str(conn.error))
            conn.transport.abort()
            return
        if slot.kind == "xvpvnc":
            conn.transport.close()
        else:
            conn.transport.write(wsframe.encode_close())
        try:
            await asyncio.wait_for(conn.wait_closed(), CLOSE_TIMEOUT)
        except TimeoutError:
            conn.transport.abort()
            dropped(slot, f"no answer to our close within {CLOSE_TIMEOUT:g} s")
            return
        if slot.kind != "xvpvnc" and (conn.close_frame or (None,))[0] != 1000:
            dropped(slot, f"closed with {conn.close_frame} instead of 1000")
            return
        if final:
            self.tally.closed_clean_at_end += 1
        else:
            self.tally.closed_clean += 1

    def _dropped(self, slot, reason):
        self.tally.dropped.append(f"{slot.kind} #{slot.sid} at {self.now():.1f} s: {reason}")

    def _unclean(self, slot, reason):
        self.tally.unclean_at_end.append(f"{slot.kind} #{slot.sid}: {reason}")

    # -- traffic -----------------------------------------------------------------------------

    async def _pause(self, seconds):
        """
        Sleep, or less when the run stops; True when it stopped.
        """
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _write_and_check(self, slot, first):
        conn = slot.conn
        slot.seq += 1
        sent = message(slot.sid, slot.seq)
        conn.write(sent)
        if first and slot.kind == "serial-writer":
            # Attaching replays the console's recent output: skip it up to our first echo.
            seen = b""
            while not seen.endswith(sent):
                seen += await asyncio.wait_for(conn.read_exactly(1), ECHO_TIMEOUT)
                if len(seen) > (1 << 20):
                    raise Closed("no echo of the first message in 1 MiB")
            got = sent
        else:
            got = await asyncio.wait_for(conn.read_exactly(MESSAGE_SIZE), ECHO_TIMEOUT)
        self.tally.messages += 1
        if got != sent:
            self.tally.integrity_errors.append(
                f"{slot.kind} #{slot.sid} at {self.now():.1f} s: sent {sent!r}, got {got!r}")
            slot.seq += 1000  # resynchronise on a fresh number rather than cascade

    async def _watch(self, slot, until):
        """
        Read whole lines until C{until} (or the stop): each from the writer, numbered one more
        than the previous.
        """
        conn, last = slot.conn, None
        while True:  # skip what precedes the first line break (a replay may start mid-line)
            left = until - self.now()
            if self._stop.is_set() or left <= 0:
                return
            try:
                byte = await asyncio.wait_for(conn.read_exactly(1), min(left, 1.0))
            except TimeoutError:
                continue
            if byte == b"\n":
                break
        quiet_since = self.now()
        while not self._stop.is_set() and self.now() < until:
            try:
                line = await asyncio.wait_for(conn.read_exactly(MESSAGE_SIZE), 1.0)
            except TimeoutError:
                if self.now() - quiet_since > WATCHER_TIMEOUT:
                    raise Closed(f"nothing for {WATCHER_TIMEOUT:g} s") from None
                continue
            quiet_since = self.now()
            m = _LINE.fullmatch(line)
            good = m is not None and int(m.group(1)) == slot.writer \
                and (last is None or int(m.group(2)) == last + 1)
            if not good:
                self.tally.integrity_errors.append(
                    f"serial-watcher #{slot.sid} at {self.now():.1f} s: {line!r} after "
                    f"message {last}")
                return  # a broken stream cannot be resynchronised: reconnect
            last = int(m.group(2))
            self.tally.watcher_lines += 1

    async def run_slot(self, slot):
        """
        Keep one session busy until the stop: open, traffic, and (churning slots) close and
        reopen; a failed or dropped session is recorded and reopened.
        """
        interval = self.args.interval
        while not self._stop.is_set():
            if slot.conn is None and await self._open(slot) is None:
                if await self._pause(1.0):
                    return
                continue
            until = self.now() + (self._rng.uniform(0.5, 1.5) * self.args.churn_period
                                  if slot.churn else math.inf)
            try:
                if slot.kind == "serial-watcher":
                    await self._watch(slot, until)
                else:
                    first = True
                    while self.now() < until:
                        if await self._pause(self._rng.uniform(0.5, 1.5) * interval):
                            break
                        await self._write_and_check(slot, first)
                        first = False
            except (TimeoutError, Closed, OSError) as e:
                self.open_now[slot.kind] -= 1
                conn, slot.conn = slot.conn, None
                reason = str(e) or type(e).__name__
                self._dropped(slot, reason)
                conn.transport.abort()
                continue
            if self._stop.is_set():
                return
            await self._close(slot)
            self.tally.churns += 1

    # -- the run ------------------------------------------------------------------------------

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


def summary_rows(samples, duration, rows=10):
    """
    About C{rows} samples spread over the traffic period, for the printed time series.
    """
    during = [s for s in samples if s.t >= 0]
    if not during:
        return []
    step = duration / rows
    picked, next_t = [], 0.0
    for s in during:
        if s.t >= next_t:
            picked.append(s)
            next_t = s.t + step * 0.9
    if picked[-1] is not during[-1]:
        picked.append(during[-1])
    return picked


def report(soak, figures, failures, header):
    lines = [header, "",
             f"{'t s':>6} {'RSS MiB':>8} {'fds':>6} {'open':>6} {'messages':>9} {'msg/s':>7}"]
    previous = None
    for s in summary_rows(soak.samples, soak.args.duration):
        rate = ((s.messages - previous.messages) / (s.t - previous.t)
                if previous is not None and s.t > previous.t else float("nan"))
        lines.append(f"{s.t:>6.0f} {s.rss / 2**20:>8.1f} {s.fds:>6} {s.open:>6} {s.messages:>9} "
                     f"{rate:>7.0f}")
        previous = s
    t = soak.tally
    mib = (lambda v: "?" if v is None else f"{v / 2**20:.1f}")
    (b_lo, b_hi), (e_lo, e_hi) = figures["baseline_window"], figures["end_window"]
    lines += [
        "",
        (f"RSS, median of {b_lo:g}-{b_hi:g} s: {mib(figures['rss_start'])} MiB; of {e_lo:g}-"
         f"{e_hi:g} s: {mib(figures['rss_end'])} MiB (allowed growth: the larger of "
         f"{RSS_GROWTH_MIB:g} MiB and {RSS_GROWTH_FRACTION:.0%})"),
        (f"descriptors: {figures['fds_start']} -> {figures['fds_end']} (allowed +{FD_GROWTH}); "
         f"{figures['fds_before']} before the sessions, {figures['fds_after_close']} after "
         f"closing them all (changed: {soak.descriptors_changed or 'none'})"),
        (f"sessions: {t.opened} opened = {t.closed_clean} closed cleanly (churn) + "
         f"{t.open_at_end} open at the end + {len(t.dropped)} dropped; of those open at the end "
         f"{t.closed_clean_at_end} closed cleanly, {len(t.unclean_at_end)} not; churn: "
         f"{t.churns} reconnects; refusals "
         f"retried: {t.refused_retries}; refused: {len(t.refused)}"),
        (f"open at the end by type: client {t.open_by_type}, service {t.server_open}; tokens "
         f"issued {t.grants} / service {t.server_issued}; redeemed {t.opened_by_type} / service "
         f"{t.server_consumed}"),
        (f"traffic: {t.messages} echoed messages ({t.messages / soak.traffic_seconds:.0f}/s), "
         f"{t.watcher_lines} lines checked by serial watchers; integrity errors: "
         f"{len(t.integrity_errors)}"),
        "",
        "PASS" if not failures else "FAIL:\n  " + "\n  ".join(failures),
    ]
    return "\n".join(lines)


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
