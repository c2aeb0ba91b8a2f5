"""
The soak's sessions, the client side of its traffic: the mix of kinds (L{plan}: console
WebSocket, xvpvnc, serial writers and watchers), each session's slot (L{Slot}), and
L{Sessions}, which opens them with freshly minted tokens (retrying a refusal while the previous
session's slot is released), sends each writer's numbered messages (L{message}) and checks
their echo byte for byte, checks the serial watchers' lines, churns, closes them as a viewer
does, and keeps the accounts (L{bench.soak_verdict.Tally}).
"""

import asyncio
import math
import random
import re
import threading
import time
from dataclasses import dataclass

from bench import wsframe
from bench.clients import ProxyWebSocketTarget, ProxyXvpTarget, SerialTarget
from bench.connections import Closed
from bench.soak_verdict import Tally
from bench.tokenapi import GrantRefused, TokenApi

MESSAGE_SIZE = 16
ECHO_TIMEOUT = 30.0
WATCHER_TIMEOUT = 60.0
CLOSE_TIMEOUT = 15.0
WATCHERS_PER_SERIAL = 4
REFUSED_RETRY = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)  # a released slot not seen yet: wait

KINDS = ("websocket", "xvpvnc", "serial-writer", "serial-watcher")
_LINE = re.compile(rb"#(\d{5}):(\d{8})\n")


def message(sid, seq):
    """
    The 16 bytes session C{sid} sends as its message number C{seq}.
    """
    return b"#%05d:%08d\n" % (sid % 100000, seq % 100000000)


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


class Sessions:
    """
    The sessions of a run (L{Slot}s): opening them, their traffic, churn and closing, and the
    client's accounts (L{Tally}).

    @param args: the command's options.
    @param info: the service's JSON line (L{bench.service}).
    """

    def __init__(self, args, info):
        self.args = args
        self.info = info
        self.tally = Tally()
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
