"""
The soak's verdict, pure (unit-tested with synthetic samples and accounts): the samples of the
service (L{Sample}) and the client's accounts (L{Tally}) a run collects, the windows its growth
is measured between (L{windows}), and the judgement (L{verdict}): RSS or descriptor growth, a
session unaccounted for, dropped or refused, an echo that differed, the service's counters
disagreeing with the client's. The thresholds are this module's constants.
"""

import statistics
from dataclasses import dataclass, field

RSS_GROWTH_MIB = 4.0
RSS_GROWTH_FRACTION = 0.05
FD_GROWTH = 10


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
