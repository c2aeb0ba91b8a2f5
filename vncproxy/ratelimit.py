"""
Slowing down and then refusing sources that keep failing (bad tokens, wrong VNC passwords),
and capping the connections each source address holds open in their handshake.

Per key (a source address, an instance), the failures of the last C{window} seconds are kept,
at most C{refuse_after} of them, and at most C{max_keys} keys (the stalest are dropped first),
so an attacker spraying from many addresses cannot grow memory without bound.
"""

from collections import Counter, OrderedDict, deque

MAX_DELAY = 3.0
_EPSILON = 1e-6


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
    Connections that have not finished their handshake (an HTTP request, a CONNECT or a VNC
    authentication): at most C{cap} per source address, so a slowloris-style client cannot take
    the service's descriptors, and at most C{total} on the listener, so many addresses cannot
    either: past C{total}, the oldest pending connection is shed (its C{shed} callable aborts
    it) to make room for the new one. Only addresses with connections pending are kept.

    @ivar refused: connections refused for being over their address's cap.
    @ivar shed: connections shed for being the oldest over the listener's total.
    """

    def __init__(self, cap, total=None):
        self.cap = cap
        self.total = total
        self.refused = 0
        self.shed = 0
        self._count = Counter()
        self._order = OrderedDict()  # shed callable -> None, oldest pending first

    def admit(self, address, shed=None, capped=True):
        """
        Count one more pending connection from C{address}; C{False} (and nothing counted) when
        C{capped} and it already has C{cap}.

        @param shed: a callable that aborts this connection, for the listener's total (the
            same callable is passed to L{release}); C{None}: not under the total.
        @param capped: whether the per-address cap applies (not to a trusted front proxy,
            which carries many clients).
        """
        if capped and self._count[address] >= self.cap:
            self.refused += 1
            return False
        self.add(address, shed)
        return True

    def add(self, address, shed=None):
        """
        Count a connection from C{address} pending again, whatever its address's cap (a
        kept-alive HTTP connection waiting for its next request: it was admitted once); the
        listener's total still applies.
        """
        self._count[address] += 1
        if shed is None:
            return
        self._order[shed] = None
        while self.total is not None and len(self._order) > self.total:
            oldest, _ = self._order.popitem(last=False)
            self.shed += 1
            oldest()  # its connection ends; its release() finds it gone from the order

    def release(self, address, shed=None):
        """
        One connection from C{address} finished its handshake or went away.
        """
        self._count[address] -= 1
        if self._count[address] <= 0:
            del self._count[address]
        if shed is not None:
            self._order.pop(shed, None)

    def counts(self):
        """
        Pending connections by address (only those with any).
        """
        return dict(self._count)

    def __len__(self):
        """
        Pending connections on the listener under its total.
        """
        return len(self._order)

class GuessBudget:
    """
    A global budget of password checks that slows rather than locks: at most C{rate} checks
    a second (after a burst of C{burst}), whoever asks, served round-robin by source address.

    Each check waits its turn in its address's queue; the addresses take turns, one check
    each, so an address that queues many checks delays only itself: someone else's check
    waits for at most one check per other waiting address, never for a whole queue. Nothing
    is ever refused or revoked here; brute force is bounded by C{rate} over every address
    together (docs/security.md states the odds).

    @param clock: an L{IReactorTime}.
    """

    def __init__(self, clock, rate, burst):
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._stamp = clock.seconds()
        self._queues = OrderedDict()  # address -> deque of _Check, in turn order
        self._timer = None
        self.checked = 0

    def submit(self, address, check):
        """
        Run C{check()} when its turn comes (at once when the budget allows).

        @return: an object whose C{cancel()} withdraws the check (its connection went away).
        """
        entry = _Check(check)
        self._queues.setdefault(address, deque()).append(entry)
        self._run()
        return entry

    def waiting(self):
        """
        Checks waiting, by address.
        """
        return {a: sum(not c.cancelled for c in q) for a, q in self._queues.items()}

    def _next(self):
        while self._queues:
            address, queue = next(iter(self._queues.items()))
            entry = queue.popleft()
            if queue:
                self._queues.move_to_end(address)
            else:
                del self._queues[address]
            if not entry.cancelled:
                return entry
        return None

    def _run(self):
        now = self._clock.seconds()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        while self._tokens >= 1 - _EPSILON:  # (clock times are floats)
            entry = self._next()
            if entry is None:
                return
            self._tokens = max(0.0, self._tokens - 1)
            self.checked += 1
            entry.run()
        if self._queues and self._timer is None:
            wait = max((1 - self._tokens) / self._rate, _EPSILON)
            self._timer = self._clock.callLater(wait, self._tick)

    def _tick(self):
        self._timer = None
        self._run()


class _Check:
    def __init__(self, check):
        self._check = check
        self.cancelled = False

    def cancel(self):
        self.cancelled = True
        self._check = None

    def run(self):
        check, self._check = self._check, None
        check()
