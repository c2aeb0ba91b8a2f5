"""
The soak's printed report: a time series of the samples over the traffic period, then the
figures the verdict rests on, the accounts and PASS or FAIL with the failures.
"""

from bench.soak_verdict import FD_GROWTH, RSS_GROWTH_FRACTION, RSS_GROWTH_MIB


def summary_rows(samples, duration, rows=10):
    """
    About C{rows} samples spread over the traffic period, for the printed time series.
    """
    during = [s for s in samples if s.t >= 0]
    if not during:
        return []
    step = duration / rows
    picked, next_t = [], 0.0
    for s in during:
        if s.t >= next_t:
            picked.append(s)
            next_t = s.t + step * 0.9
    if picked[-1] is not during[-1]:
        picked.append(during[-1])
    return picked


def report(soak, figures, failures, header):
    lines = [header, "",
             f"{'t s':>6} {'RSS MiB':>8} {'fds':>6} {'open':>6} {'messages':>9} {'msg/s':>7}"]
    previous = None
    for s in summary_rows(soak.samples, soak.args.duration):
        rate = ((s.messages - previous.messages) / (s.t - previous.t)
                if previous is not None and s.t > previous.t else float("nan"))
        lines.append(f"{s.t:>6.0f} {s.rss / 2**20:>8.1f} {s.fds:>6} {s.open:>6} {s.messages:>9} "
                     f"{rate:>7.0f}")
        previous = s
    t = soak.tally
    mib = (lambda v: "?" if v is None else f"{v / 2**20:.1f}")
    (b_lo, b_hi), (e_lo, e_hi) = figures["baseline_window"], figures["end_window"]
    lines += [
        "",
        (f"RSS, median of {b_lo:g}-{b_hi:g} s: {mib(figures['rss_start'])} MiB; of {e_lo:g}-"
         f"{e_hi:g} s: {mib(figures['rss_end'])} MiB (allowed growth: the larger of "
         f"{RSS_GROWTH_MIB:g} MiB and {RSS_GROWTH_FRACTION:.0%})"),
        (f"descriptors: {figures['fds_start']} -> {figures['fds_end']} (allowed +{FD_GROWTH}); "
         f"{figures['fds_before']} before the sessions, {figures['fds_after_close']} after "
         f"closing them all (changed: {soak.descriptors_changed or 'none'})"),
        (f"sessions: {t.opened} opened = {t.closed_clean} closed cleanly (churn) + "
         f"{t.open_at_end} open at the end + {len(t.dropped)} dropped; of those open at the end "
         f"{t.closed_clean_at_end} closed cleanly, {len(t.unclean_at_end)} not; churn: "
         f"{t.churns} reconnects; refusals "
         f"retried: {t.refused_retries}; refused: {len(t.refused)}"),
        (f"open at the end by type: client {t.open_by_type}, service {t.server_open}; tokens "
         f"issued {t.grants} / service {t.server_issued}; redeemed {t.opened_by_type} / service "
         f"{t.server_consumed}"),
        (f"traffic: {t.messages} echoed messages ({t.messages / soak.traffic_seconds:.0f}/s), "
         f"{t.watcher_lines} lines checked by serial watchers; integrity errors: "
         f"{len(t.integrity_errors)}"),
        "",
        "PASS" if not failures else "FAIL:\n  " + "\n  ".join(failures),
    ]
    return "\n".join(lines)
