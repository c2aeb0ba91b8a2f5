"""
Session rules on a test clock: idle timeout reset by traffic, maximum length, limits.
"""

import pytest
from twisted.internet.task import Clock

from vncproxy.closecodes import CloseCode
from vncproxy.sessions import LimitReached, SessionRegistry, SessionTimer


def timer(idle=600, maximum=3600):
    clock = Clock()
    expired = []
    t = SessionTimer(clock, idle, maximum, expired.append)
    t.start()
    return clock, t, expired


def test_idle_session_closes_after_idle_timeout():
    """With no traffic, the session expires exactly at idle_timeout."""
    clock, _, expired = timer(idle=600)
    clock.advance(599.9)
    assert expired == []
    clock.advance(0.1)
    assert expired == [CloseCode.IDLE_TIMEOUT]


def test_traffic_resets_the_idle_timer():
    """Traffic before the deadline pushes the idle deadline out by a full idle_timeout."""
    clock, t, expired = timer(idle=600)
    clock.advance(500)
    t.activity()
    clock.advance(599)
    assert expired == []
    clock.advance(1)
    assert expired == [CloseCode.IDLE_TIMEOUT]


def test_max_session_closes_a_busy_session():
    """Traffic does not keep a session beyond max_session."""
    clock, t, expired = timer(idle=600, maximum=3600)
    for _ in range(36):
        clock.advance(100)
        t.activity()
    assert expired == [CloseCode.SESSION_TOO_LONG]
    assert clock.getDelayedCalls() == []


def test_resumed_session_keeps_the_original_start():
    """A session resumed after a drop ends at the first session's max_session deadline."""
    clock = Clock()
    clock.advance(1000)
    expired = []
    t = SessionTimer(clock, 600, 3600, expired.append)
    t.start(started_at=1000 - 3000)
    clock.advance(599)
    t.activity()
    assert expired == []
    clock.advance(1)
    assert expired == [CloseCode.SESSION_TOO_LONG]


def test_stop_cancels_both_timers():
    """A stopped timer never fires."""
    clock, t, expired = timer()
    t.stop()
    clock.advance(10_000)
    assert expired == [] and clock.getDelayedCalls() == []


def test_registry_enforces_per_instance_limit():
    """At most max_vnc VNC sessions per instance; other instances are independent."""
    registry = SessionRegistry(max_vnc=2)
    a, b, c = object(), object(), object()
    registry.admit("i1", "vnc", a, "websocket")
    registry.admit("i1", "vnc", b, "websocket")
    with pytest.raises(LimitReached):
        registry.admit("i1", "vnc", c, "websocket")
    registry.admit("i2", "vnc", c, "websocket")
    registry.release("i1", "vnc", a)
    registry.admit("i1", "vnc", a, "websocket")
    assert registry.count("i1", "vnc") == 2
