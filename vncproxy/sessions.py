"""
The registry of live console sessions: per-instance limits and closing an instance's sessions.

A session is anything with a C{close(code, detail=None)} method: C{code} is a
L{vncproxy.closecodes.CloseCode}, C{detail} an optional explanation added to its reason.
"""

from collections import defaultdict


class LimitReached(Exception):
    """
    The instance already has as many sessions of this console type as allowed.
    """


class SessionRegistry:
    """
    @param max_vnc: the most VNC sessions one instance may have at once.
    """

    def __init__(self, max_vnc):
        self._limits = {"vnc": max_vnc}
        self._sessions = defaultdict(set)  # (instance_uuid, console_type) -> {session}

    def count(self, instance_uuid, console_type):
        return len(self._sessions.get((instance_uuid, console_type), ()))

    def check(self, instance_uuid, console_type):
        """
        @raise LimitReached: when a new session of this type would exceed the limit.
        """
        limit = self._limits.get(console_type)
        if limit is not None and self.count(instance_uuid, console_type) >= limit:
            raise LimitReached(f"{console_type} console limit reached ({limit} sessions)")

    def admit(self, instance_uuid, console_type, session):
        """
        Register a session, enforcing the limit.

        @raise LimitReached: when the instance is at its limit.
        """
        self.check(instance_uuid, console_type)
        self._sessions[(instance_uuid, console_type)].add(session)

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

    def close_instance(self, instance_uuid, code, detail=None):
        """
        Close every session of one instance.
        """
        for session in self.sessions(instance_uuid):
            session.close(code, detail)

    def close_all(self, code, detail=None):
        for session in self.sessions():
            session.close(code, detail)
