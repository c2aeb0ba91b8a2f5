"""
The failure limiter on a test clock.
"""

from twisted.internet.task import Clock

from vncproxy.ratelimit import MAX_DELAY, FailureLimiter, PendingPerAddress


def test_first_failures_are_free_then_slowed_then_refused():
    """Up to slow_after failures answer at once, later ones ever later, and past refuse_after the key is blocked."""
    clock = Clock()
    limiter = FailureLimiter(clock, window=60, slow_after=3, refuse_after=6)
    delays = [limiter.failed("1.2.3.4") for _ in range(5)]
    assert delays == [0, 0, 0, 0.25, 0.5]
    assert not limiter.blocked("1.2.3.4")
    limiter.failed("1.2.3.4")
    assert limiter.blocked("1.2.3.4")
    assert not limiter.blocked("5.6.7.8")


def test_failures_age_out_of_the_window():
    """A blocked key is heard again once its failures are older than the window."""
    clock = Clock()
    limiter = FailureLimiter(clock, window=60, slow_after=1, refuse_after=2)
    limiter.failed("k")
    limiter.failed("k")
    assert limiter.blocked("k")
    clock.advance(60)
    assert not limiter.blocked("k")
    assert limiter.failed("k") == 0


def test_delay_is_capped():
    """However many failures, the delay never exceeds MAX_DELAY."""
    limiter = FailureLimiter(Clock(), window=60, slow_after=0, refuse_after=1000)
    assert max(limiter.failed("k") for _ in range(100)) == MAX_DELAY


def test_memory_is_bounded_by_max_keys():
    """Spraying from many addresses keeps at most max_keys entries (the stalest go first)."""
    limiter = FailureLimiter(Clock(), window=60, slow_after=0, refuse_after=1, max_keys=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._failures) == 100
    assert limiter.blocked("10.0.3.231") and not limiter.blocked("10.0.0.0")


def test_pending_connections_are_capped_per_address_and_released():
    """Each address gets at most cap pending connections; a release frees a place; others are
    counted apart; nothing is kept for an address with none pending."""
    pending = PendingPerAddress(cap=2)
    assert pending.admit("10.0.0.1") and pending.admit("10.0.0.1")
    assert not pending.admit("10.0.0.1")
    assert pending.admit("10.0.0.2")
    assert pending.refused == 1
    pending.release("10.0.0.1")
    assert pending.admit("10.0.0.1")
    pending.add("10.0.0.1")  # a kept-alive connection's next request: counted, not capped
    assert pending.counts() == {"10.0.0.1": 3, "10.0.0.2": 1}
    for _ in range(3):
        pending.release("10.0.0.1")
    pending.release("10.0.0.2")
    assert pending.counts() == {}


def test_pending_total_sheds_the_oldest_connection():
    """Past the listener's total, the oldest pending connection is shed (its callable called
    once), whatever its address; released ones leave the order; keep-alive re-entries count."""
    from vncproxy.ratelimit import PendingPerAddress

    shed = []
    pending = PendingPerAddress(cap=32, total=3)
    callables = [lambda n=n: shed.append(n) for n in range(5)]
    for n in range(3):
        assert pending.admit(f"192.0.2.{n}", callables[n])
    pending.release("192.0.2.1", callables[1])  # finished its handshake
    assert pending.admit("192.0.2.3", callables[3])
    assert shed == [] and len(pending) == 3
    assert pending.admit("192.0.2.4", callables[4])
    assert shed == [0] and pending.shed == 1 and len(pending) == 3
    pending.release("192.0.2.0", callables[0])  # the shed connection's own release is harmless
    assert pending.counts() == {"192.0.2.2": 1, "192.0.2.3": 1, "192.0.2.4": 1}


def test_trusted_proxies_skip_the_per_address_cap_but_not_the_total():
    from vncproxy.ratelimit import PendingPerAddress

    shed = []
    pending = PendingPerAddress(cap=1, total=2)
    assert pending.admit("10.0.0.5", lambda: shed.append(1), capped=False)
    assert pending.admit("10.0.0.5", lambda: shed.append(2), capped=False)
    assert pending.admit("10.0.0.5", lambda: shed.append(3), capped=False)
    assert shed == [1]
    assert pending.admit("192.0.2.9") and not pending.admit("192.0.2.9")  # cap 1 applies


# -- GuessBudget ------------------------------------------------------------------------------

def _budget(rate=2.0, burst=2):
    from vncproxy.ratelimit import GuessBudget
    clock = Clock()
    return clock, GuessBudget(clock, rate, burst)


def test_guess_budget_runs_at_once_within_the_burst():
    clock, budget = _budget()
    ran = []
    budget.submit("a", lambda: ran.append(1))
    budget.submit("b", lambda: ran.append(2))
    assert ran == [1, 2]
    budget.submit("a", lambda: ran.append(3))
    assert ran == [1, 2]
    clock.advance(0.5)
    assert ran == [1, 2, 3]


def test_guess_budget_is_the_global_rate_over_many_addresses():
    clock, budget = _budget(rate=10.0, burst=10)
    ran = []
    for i in range(1000):
        budget.submit(f"10.0.{i // 250}.{i % 250}", lambda: ran.append(1))
    for _ in range(100):
        clock.advance(0.1)
    assert len(ran) == 10 + 100  # the burst, then 10 a second for 10 seconds


def test_guess_budget_takes_addresses_in_turn():
    clock, budget = _budget(rate=1.0, burst=1)
    ran = []
    budget.submit("a", lambda: ran.append("a0"))
    for i in range(1, 5):
        budget.submit("a", lambda i=i: ran.append(f"a{i}"))
    budget.submit("b", lambda: ran.append("b0"))
    clock.advance(1)
    clock.advance(1)
    assert ran == ["a0", "a1", "b0"]
    assert budget.waiting() == {"a": 3}


def test_guess_budget_skips_withdrawn_checks_without_spending():
    clock, budget = _budget(rate=1.0, burst=1)
    ran = []
    budget.submit("a", lambda: ran.append("first"))
    budget.submit("a", lambda: ran.append("gone")).cancel()
    budget.submit("b", lambda: ran.append("b"))
    clock.advance(1)
    assert ran == ["first", "b"]
    assert clock.getDelayedCalls() == []
