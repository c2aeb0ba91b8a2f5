"""
The soak's verdict (bench/soak_verdict.py): proved able to fail, on synthetic samples and
accounts, for each thing it watches, and to pass a flat, noisy run; and the soak's messages and
session mix (bench/soak_sessions.py).
"""

import random

from bench.soak_sessions import message, plan
from bench.soak_verdict import RSS_GROWTH_MIB, Sample, Tally, verdict, windows

MIB = 2**20
DURATION = 600.0


def series(rss=lambda t: 80 * MIB, fds=lambda t: 1100, duration=DURATION, every=5.0, seed=1):
    """Samples every C{every} seconds from -20 s (opening) to the end, with noise."""
    rng = random.Random(seed)
    out, t = [], -20.0
    while t <= duration:
        out.append(Sample(t, int(rss(t) + rng.uniform(-0.5, 0.5) * MIB),
                          int(fds(t) + rng.randint(-2, 2)), 1000, int(max(t, 0) * 500)))
        t += every
    return out


def tally(**changes):
    """Accounts of a good run: 1,000 sessions open at the end, 2,000 churned, all agreeing."""
    good = Tally(opened=3000, closed_clean=2000, open_at_end=1000, closed_clean_at_end=1000,
                 churns=2000, messages=300000,
                 opened_by_type={"vnc": 2900, "serial": 100}, grants={"vnc": 2900, "serial": 100},
                 open_by_type={"vnc": 950, "serial": 50}, server_open={"vnc": 950, "serial": 50},
                 server_issued={"vnc": 2900, "serial": 100},
                 server_consumed={"vnc": 2900, "serial": 100},
                 server_open_after_close={"vnc": 0, "serial": 0})
    for name, value in changes.items():
        setattr(good, name, value)
    return good


def judge(samples=None, accounts=None, fds_before=14, fds_after_close=16):
    failures, _ = verdict(samples if samples is not None else series(),
                          accounts if accounts is not None else tally(), DURATION, fds_before,
                          fds_after_close)
    return failures


def test_flat_noisy_run_passes():
    """RSS and descriptors that only jitter, and accounts that agree, pass."""
    assert judge() == []


def test_rss_growing_through_the_run_fails():
    """RSS climbing 10 MiB over ten minutes (a leak of about 1 KiB a second) fails."""
    failures = judge(series(rss=lambda t: 80 * MIB + max(t, 0) / DURATION * 10 * MIB))
    assert len(failures) == 1 and failures[0].startswith("RSS grew")


def test_rss_growth_within_five_percent_of_a_large_process_passes():
    """The allowance is the larger of RSS_GROWTH_MIB and 5%: a step of 8 MiB on 200 MiB
    passes, 12 MiB fails."""
    assert RSS_GROWTH_MIB < 8
    assert judge(series(rss=lambda t: (200 + 8 * (t > 300)) * MIB)) == []
    assert judge(series(rss=lambda t: (200 + 12 * (t > 300)) * MIB)) != []


def test_descriptors_growing_through_the_run_fail():
    """Descriptors climbing by 30 over the run (a socket leaked now and then) fail."""
    failures = judge(series(fds=lambda t: 1100 + max(t, 0) / DURATION * 30))
    assert len(failures) == 1 and failures[0].startswith("open descriptors grew")


def test_descriptors_left_after_every_session_closed_fail():
    """More than FD_GROWTH descriptors above the pre-session count after the final close fail."""
    failures = judge(fds_before=14, fds_after_close=40)
    assert len(failures) == 1 and "after every session closed" in failures[0]


def test_a_session_lost_from_the_accounts_fails():
    """One session neither closed, open nor dropped (the client lost track) fails."""
    failures = judge(accounts=tally(opened=3001))
    assert len(failures) == 1 and failures[0].startswith("sessions unaccounted for")


def test_a_dropped_session_fails():
    """A session the service closed by itself fails, even when the accounts add up."""
    failures = judge(accounts=tally(opened=3001, dropped=["websocket #7 at 12.0 s: EOF"]))
    assert len(failures) == 1 and "1 sessions dropped" in failures[0]


def test_an_integrity_error_fails():
    """One echo that differed from what was sent fails."""
    failures = judge(accounts=tally(integrity_errors=["websocket #3: sent ..., got ..."]))
    assert len(failures) == 1 and "integrity errors" in failures[0]


def test_a_refused_reconnect_fails():
    """A churning session that could not reopen fails."""
    failures = judge(accounts=tally(refused=["xvpvnc ...: token API answered 409"]))
    assert len(failures) == 1 and "refused" in failures[0]


def test_a_session_not_closed_cleanly_at_the_end_fails():
    """A session open at the end whose close was not answered cleanly fails."""
    failures = judge(accounts=tally(closed_clean_at_end=999,
                                    unclean_at_end=["websocket #1: closed with (1006, '')"]))
    assert len(failures) == 1 and "not closed cleanly at the end" in failures[0]


def test_the_service_counting_other_open_sessions_fails():
    """The service's gauge of open VNC sessions differing from the client's count fails."""
    failures = judge(accounts=tally(server_open={"vnc": 951, "serial": 50}))
    assert failures == ["open sessions (vnc): the client counts 950, the service 951"]


def test_tokens_issued_or_redeemed_disagreeing_fail():
    """The service's token counters differing from the client's grants and connections fail."""
    failures = judge(accounts=tally(server_issued={"vnc": 2901, "serial": 100},
                                    server_consumed={"vnc": 2900}))
    assert failures == ["tokens issued (vnc): the client counts 2900, the service 2901",
                        "tokens redeemed (serial): the client counts 100, the service 0"]


def test_sessions_still_counted_after_the_final_close_fail():
    """The service still counting a session once every one was closed fails."""
    failures = judge(accounts=tally(server_open_after_close={"vnc": 1, "serial": 0}))
    assert failures == ["the service still counts sessions after all closed: {'vnc': 1}"]


def test_too_few_samples_fail():
    """A run with no samples in its windows cannot pass."""
    assert judge(samples=[]) == ["too few samples to judge growth (0 samples)"]


def test_windows_are_a_minute_on_ten_minutes_and_scale_down():
    """A 10-minute run compares 240-300 s with 540-600 s; a 15 s run 6-9 s with 12-15 s."""
    assert windows(600) == ((240, 300), (540, 600))
    assert windows(15) == ((6, 9), (12, 15))


def test_growth_during_the_warm_up_alone_passes():
    """RSS that climbs 8 MiB over the first 3 minutes (garbage awaiting the first full
    collection) and then stays flat passes; the same climb after the warm-up fails."""
    assert judge(series(rss=lambda t: 80 * MIB + min(max(t, 0), 180) / 180 * 8 * MIB)) == []
    assert judge(series(rss=lambda t: 80 * MIB + min(max(t - 300, 0), 180) / 180 * 8 * MIB)) \
        != []


def test_messages_are_sixteen_bytes_and_unique_per_session_and_number():
    """Every message is 16 bytes, and differs between sessions and between numbers."""
    assert message(7, 1) == b"#00007:00000001\n" and len(message(99999, 99999999)) == 16
    assert message(7, 2) != message(7, 1) != message(8, 1)


def test_the_mix_adds_up_to_the_sessions_asked_for():
    """1,000 sessions: 800 WebSocket, 150 xvpvnc, 10 serial domains of 5 viewers."""
    assert plan(1000) == (800, 150, 10)
    for n in (1, 9, 10, 50, 333):
        websocket, xvpvnc, serial = plan(n)
        assert websocket + xvpvnc + serial * 5 == n and min(websocket, xvpvnc, serial) >= 0
