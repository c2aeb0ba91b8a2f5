"""
The registry of live console sessions: per-instance limits, closing an instance's sessions, and
the inventory operators read (C{GET .../console_sessions}) and act on (C{DELETE}).

A session is anything with a C{close(code, detail=None)} method: C{code} is a
L{vncproxy.closecodes.CloseCode}, C{detail} an optional explanation added to its reason. For the
inventory it also has (every kind of session, whatever its listener):

    grant               the L{vncproxy.tokens.Grant} that admitted it (C{id}, C{read_only})
    peer                the viewer's address as its listener saw it
    timer               its L{SessionTimer} (C{started_at}, C{last_activity})
    bytes_to_viewer, bytes_from_viewer

The listener that admitted it (C{websocket}, C{xvpvnc}, ...) is given to L{SessionRegistry.admit}.
"""

import secrets
from collections import defaultdict
from dataclasses import dataclass

from vncproxy.clientaddr import peer_host
from vncproxy.closecodes import CloseCode


@dataclass(frozen=True)
class Entry:
    """
    One live session in the registry: C{id} is what operators name it by.
    """

    id: str
    instance_uuid: str
    console_type: str
    listener: str
    session: object

    def describe(self):
        """
        The session's inventory row (times are clock seconds; the API renders them).
        """
        session = self.session
        grant = session.grant
        return {
            "id": self.id,
            "state": "open",
            "console_type": self.console_type,
            "mode": "read_only" if grant.read_only else "interactive",
            "client": peer_host(getattr(session, "peer", None)),
            "listener": self.listener,
            "started_at": self.started_at,
            "last_activity_at": getattr(getattr(session, "timer", None), "last_activity", None),
            "bytes_to_viewer": getattr(session, "bytes_to_viewer", 0),
            "bytes_from_viewer": getattr(session, "bytes_from_viewer", 0),
            "grant_id": grant.id,
        }

    @property
    def started_at(self):
        """
        When the session started (clock time), or C{None} before it did.
        """
        return getattr(getattr(self.session, "timer", None), "started_at", None)



class Listed:
    """
    What the session inventory reads of a session (VNC or serial): the grant it was admitted
    with, its client, and its idle/maximum timer, kept by the session as C{_grant}, C{_peer}
    and C{_timer}.
    """

    @property
    def grant(self):
        return self._grant

    @property
    def peer(self):
        return self._peer

    @property
    def timer(self):
        return self._timer

class LimitReached(Exception):
    """
    The instance already has as many sessions of this console type as allowed.
    """


def _read_only(session):
    grant = getattr(session, "grant", None)
    return bool(getattr(grant, "read_only", False))


class SessionRegistry:
    """
    @param max_vnc: the most interactive VNC sessions one instance may have at once.
    @param max_vnc_viewers: the most view-only VNC sessions one instance may have besides.
    """

    def __init__(self, max_vnc, max_vnc_viewers=8):
        self._limits = {("vnc", False): max_vnc, ("vnc", True): max_vnc_viewers}
        self._sessions = defaultdict(set)  # (instance_uuid, console_type) -> {session}
        self._entries = {}  # session -> Entry

    def count(self, instance_uuid, console_type, read_only=None):
        """
        The live sessions of one type (only the view-only ones, or only the others, when
        C{read_only} is given).
        """
        live = self._sessions.get((instance_uuid, console_type), ())
        if read_only is None:
            return len(live)
        return sum(1 for s in live if _read_only(s) == read_only)

    def check(self, instance_uuid, console_type, read_only=False):
        """
        @raise LimitReached: when a new session of this type (and mode) would exceed the limit.
        """
        limit = self._limits.get((console_type, bool(read_only)))
        if limit is not None and self.count(instance_uuid, console_type, bool(read_only)) >= limit:
            kind = f"view-only {console_type}" if read_only else console_type
            raise LimitReached(f"{kind} console limit reached ({limit} sessions)")

    def admit(self, instance_uuid, console_type, session, listener=None):
        """
        Register a session, enforcing the limit.

        @param listener: the name of the listener that admitted it (C{"websocket"},
            C{"xvpvnc"}, ...: its viewer adapter's C{listener}), for the inventory.
        @return: its L{Entry}.
        @raise LimitReached: when the instance is at its limit.
        """
        self.check(instance_uuid, console_type, _read_only(session))
        self._sessions[(instance_uuid, console_type)].add(session)
        entry = Entry(secrets.token_hex(6), instance_uuid, console_type, listener, session)
        self._entries[session] = entry
        return entry

    def entries(self, instance_uuid):
        """
        The L{Entry} of every live session of one instance, oldest first.
        """
        live = [self._entries[s] for s in self.sessions(instance_uuid) if s in self._entries]
        return sorted(live, key=lambda e: (e.started_at or 0, e.id))

    def find(self, instance_uuid, session_id):
        """
        The L{Entry} of one live session of C{instance_uuid}, or C{None}.
        """
        for entry in self.entries(instance_uuid):
            if entry.id == session_id:
                return entry
        return None

    def holder(self, token_key):
        """
        The L{Entry} of the live session that the token with this key opened, or C{None}.
        """
        if token_key is None:
            return None
        return next((e for e in list(self._entries.values())
                     if e.session.grant._key == token_key), None)

    def release(self, instance_uuid, console_type, session):
        """
        Forget a session; calling it twice is harmless.
        """
        key = (instance_uuid, console_type)
        live = self._sessions.get(key)
        if live is not None:
            live.discard(session)
            if not live:
                del self._sessions[key]
        self._entries.pop(session, None)

    def sessions(self, instance_uuid=None):
        """
        The live sessions, of one instance or of all.
        """
        return [
            s
            for (uuid, _), live in list(self._sessions.items())
            if instance_uuid is None or uuid == instance_uuid
            for s in list(live)
        ]

    def typed_sessions(self):
        """
        (console type, session) pairs of every live session.
        """
        return [(console_type, s) for (_, console_type), live in list(self._sessions.items())
                for s in list(live)]

    def close_instance(self, instance_uuid, code, detail=None):
        """
        Close every session of one instance.
        """
        for session in self.sessions(instance_uuid):
            session.close(code, detail)

    def close_all(self, code, detail=None):
        for session in self.sessions():
            session.close(code, detail)


class SessionTimer:
    """
    A session's idle and maximum-length timers on an injected clock.

    Traffic either way calls L{activity}, which only records the time: the idle timer, when it
    fires, re-arms itself for the remaining time if there was traffic meanwhile, so the hot
    path never touches the reactor's timer queue.

    @param clock: an L{IReactorTime}.
    @param idle_timeout: seconds without traffic before C{on_expire(CloseCode.IDLE_TIMEOUT)}.
    @param max_session: seconds after L{start} (or after C{started_at}) before
        C{on_expire(CloseCode.SESSION_TOO_LONG)}.
    """

    def __init__(self, clock, idle_timeout, max_session, on_expire):
        self._clock = clock
        self._idle = idle_timeout
        self._max = max_session
        self._on_expire = on_expire
        self._last = None
        self._idle_call = None
        self._max_call = None
        self.started_at = None

    def start(self, started_at=None):
        """
        Arm both timers. C{started_at} (a clock time) makes a resumed session keep the
        original session's maximum length.
        """
        now = self._clock.seconds()
        self.started_at = now if started_at is None else started_at
        self._last = now
        self._idle_call = self._clock.callLater(self._idle, self._check_idle)
        remaining = max(0.0, self.started_at + self._max - now)
        self._max_call = self._clock.callLater(remaining, self._expire, "max")

    def activity(self):
        self._last = self._clock.seconds()

    @property
    def last_activity(self):
        """
        The clock time of the last traffic either way (the start until there is any).
        """
        return self._last

    def _check_idle(self):
        quiet = self._clock.seconds() - self._last
        if quiet >= self._idle:
            self._idle_call = None
            self._expire("idle")
        else:
            self._idle_call = self._clock.callLater(self._idle - quiet, self._check_idle)

    def _expire(self, which):
        if which == "max":
            self._max_call = None
        self.stop()
        self._on_expire(CloseCode.IDLE_TIMEOUT if which == "idle" else CloseCode.SESSION_TOO_LONG)

    def stop(self):
        for name in ("_idle_call", "_max_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
