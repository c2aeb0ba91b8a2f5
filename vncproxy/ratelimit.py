"""
Counting failures per key in a sliding window, on an injected clock: what limits wrong
one-time VNC passwords per client address and per instance.
"""

from collections import OrderedDict, deque


class FailureLimiter:
    """
    A key is blocked while it has C{limit} or more failures in the last C{window} seconds.

    Memory is bounded: each key keeps at most C{limit} timestamps, and at most C{max_keys}
    keys are tracked (the least recently failed are forgotten first).

    @param clock: an L{IReactorTime}.
    """

    def __init__(self, clock, limit, window, max_keys=10_000):
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("limit, window and max_keys must be positive")
        self._clock = clock
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._failures = OrderedDict()  # key -> deque of failure times, oldest first

    def __len__(self):
        return len(self._failures)

    def _recent(self, key, now):
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def failures(self, key):
        """
        @return: how many failures C{key} had in the window.
        """
        times = self._recent(key, self._clock.seconds())
        return len(times) if times else 0

    def blocked(self, key):
        """
        @return: whether C{key} reached the limit within the window.
        """
        return self.failures(key) >= self.limit

    def record(self, key):
        """
        Count one failure for C{key} now.
        """
        now = self._clock.seconds()
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.limit)
        times.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)


__all__ = ["FailureLimiter"]
