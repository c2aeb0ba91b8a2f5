"""
Slowing down and then refusing sources that keep failing (bad tokens, wrong VNC passwords),
and capping the connections each source address holds open in their handshake.

Per key (a source address, an instance), the failures of the last C{window} seconds are kept,
at most C{refuse_after} of them, and at most C{max_keys} keys (the stalest are dropped first),
so an attacker spraying from many addresses cannot grow memory without bound.
"""

from collections import Counter, OrderedDict, deque

MAX_DELAY = 3.0


class FailureLimiter:
    """
    @param clock: an L{IReactorTime}.
    @param window: seconds a failure counts for.
    @param slow_after: failures after which each refusal is delayed.
    @param refuse_after: failures after which the key is refused outright.
    """

    def __init__(self, clock, window, slow_after, refuse_after, max_keys=10_000):
        self._clock = clock
        self._window = window
        self._slow_after = slow_after
        self._refuse_after = refuse_after
        self._max_keys = max_keys
        self._failures = OrderedDict()  # key -> deque of failure times

    def _recent(self, key):
        times = self._failures.get(key)
        if times is None:
            return 0
        cutoff = self._clock.seconds() - self._window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return len(times)

    def blocked(self, key):
        """
        Whether C{key} has failed too often to be heard at all right now.
        """
        return self._recent(key) >= self._refuse_after

    def failed(self, key):
        """
        Record a failure.

        @return: how many seconds to wait before answering it (0 for the first few).
        """
        count = self._recent(key) + 1
        times = self._failures.pop(key, None) or deque(maxlen=self._refuse_after)
        times.append(self._clock.seconds())
        self._failures[key] = times  # most recently failed last
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)
        if count <= self._slow_after:
            return 0.0
        return min(MAX_DELAY, 0.25 * (count - self._slow_after))


class PendingPerAddress:
    """
    Connections per source address that have not finished their handshake (an HTTP request,
    a CONNECT or a VNC authentication), at most C{cap} each: a slowloris-style client cannot
    take the service's descriptors. Only addresses with connections pending are kept.

    @ivar refused: connections refused for being over the cap.
    """

    def __init__(self, cap):
        self.cap = cap
        self.refused = 0
        self._count = Counter()

    def admit(self, address):
        """
        Count one more pending connection from C{address}; C{False} (and nothing counted) when
        it already has C{cap}.
        """
        if self._count[address] >= self.cap:
            self.refused += 1
            return False
        self.add(address)
        return True

    def add(self, address):
        """
        Count a connection from C{address} pending again, whatever the cap (a kept-alive HTTP
        connection waiting for its next request: it was admitted once).
        """
        self._count[address] += 1

    def release(self, address):
        """
        One connection from C{address} finished its handshake or went away.
        """
        self._count[address] -= 1
        if self._count[address] <= 0:
            del self._count[address]

    def counts(self):
        """
        Pending connections by address (only those with any).
        """
        return dict(self._count)
