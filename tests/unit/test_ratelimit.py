"""
Tests for L{vncproxy.ratelimit.FailureLimiter} on a fake clock.
"""

import pytest
from twisted.internet.task import Clock

from vncproxy.ratelimit import FailureLimiter


def test_blocked_at_the_limit_within_the_window():
    """A key is blocked once it has `limit` failures in the window, not before."""
    clock = Clock()
    limiter = FailureLimiter(clock, limit=3, window=60)
    for expected in (1, 2):
        limiter.record("a")
        assert limiter.failures("a") == expected and not limiter.blocked("a")
    limiter.record("a")
    assert limiter.blocked("a") and not limiter.blocked("b")


def test_window_slides():
    """Failures older than the window stop counting, one by one."""
    clock = Clock()
    limiter = FailureLimiter(clock, limit=2, window=10)
    limiter.record("a")
    clock.advance(6)
    limiter.record("a")
    assert limiter.blocked("a")
    clock.advance(4)  # the first failure is now exactly `window` old
    assert not limiter.blocked("a") and limiter.failures("a") == 1
    clock.advance(6)
    assert limiter.failures("a") == 0 and len(limiter) == 0


def test_memory_is_bounded():
    """Each key keeps at most `limit` times, and only the most recent `max_keys` keys are kept."""
    clock = Clock()
    limiter = FailureLimiter(clock, limit=2, window=60, max_keys=3)
    for _ in range(100):
        limiter.record("a")
    assert limiter.failures("a") == 2
    for key in "bcd":
        limiter.record(key)
    assert len(limiter) == 3 and limiter.failures("a") == 0


@pytest.mark.parametrize("args", [(0, 60), (1, 0)])
def test_nonsense_limits_are_refused(args):
    """A zero limit or window is a programming error."""
    with pytest.raises(ValueError):
        FailureLimiter(Clock(), *args)
