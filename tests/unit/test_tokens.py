"""
Tokens: random, hashed at rest, single use, bound to instance and type, expiring on the clock.
"""

import base64

import pytest
from twisted.internet.task import Clock

from vncproxy.tokens import TokenRejected, TokenStore


def store(ttl=180):
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock, TokenStore(clock, ttl)


def test_token_has_at_least_128_random_bits():
    """Each token decodes to at least 16 bytes and no two are alike."""
    _, tokens = store()
    secrets = {tokens.mint("u", "vnc")[0] for _ in range(200)}
    assert len(secrets) == 200
    for s in secrets:
        assert len(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))) >= 16


def test_consume_returns_the_grant_once():
    """The first redemption returns the grant; the second is refused."""
    _, tokens = store()
    secret, grant = tokens.mint("uuid-1", "vnc", caller="key-1")
    assert tokens.consume(secret) == grant
    assert grant.instance_uuid == "uuid-1" and grant.console_type == "vnc"
    with pytest.raises(TokenRejected):
        tokens.consume(secret)


def test_token_expires_after_ttl():
    """A token is valid until its TTL has passed on the injected clock, and not after."""
    clock, tokens = store(ttl=180)
    early, _ = tokens.mint("u", "vnc")
    late, _ = tokens.mint("u", "vnc")
    clock.advance(179.9)
    tokens.consume(early)
    clock.advance(0.1)
    with pytest.raises(TokenRejected):
        tokens.consume(late)


def test_only_a_hash_is_stored():
    """The store's memory holds no token in clear, and expired ones are swept."""
    clock, tokens = store(ttl=10)
    secret, _ = tokens.mint("u", "vnc")
    assert secret not in repr(vars(tokens))
    assert secret.encode() not in b"".join(tokens._grants)
    clock.advance(11)
    tokens.mint("u", "vnc")
    assert len(tokens) == 1


@pytest.mark.parametrize("bad", ["", None, "x" * 43, "\udcff"])
def test_unknown_or_malformed_tokens_are_rejected(bad):
    """Missing, unknown and undecodable tokens are refused with a message free of the token."""
    _, tokens = store()
    with pytest.raises(TokenRejected) as e:
        tokens.consume(bad)
    assert (bad or "@@") not in str(e.value)


def test_grant_records_expiry_and_force():
    """A grant carries created/expiry times from the clock and the force flag."""
    clock, tokens = store(ttl=60)
    _, grant = tokens.mint("u", "serial", force=True)
    assert grant.created_at == clock.seconds()
    assert grant.expires_at == clock.seconds() + 60
    assert grant.force is True


def test_unknown_console_type_is_refused():
    """Only vnc and serial tokens exist."""
    _, tokens = store()
    with pytest.raises(ValueError):
        tokens.mint("u", "spice")


def test_dropped_session_may_resume_once_within_grace():
    """A token whose session dropped opens one new session within the grace, keeping the first start."""
    clock, tokens = store()
    tokens.reconnect_grace = 15
    secret, grant = tokens.mint("u", "vnc")
    first = tokens.consume(secret)
    started = clock.seconds()
    clock.advance(100)
    tokens.release(first, resumable=True, session_started_at=started)
    clock.advance(14)
    again = tokens.consume(secret)
    assert again.session_started_at == started
    assert again.instance_uuid == grant.instance_uuid
    with pytest.raises(TokenRejected):
        tokens.consume(secret)


def test_grace_runs_out():
    """After the grace, a dropped session's token is dead."""
    clock, tokens = store()
    tokens.reconnect_grace = 15
    secret, _ = tokens.mint("u", "vnc")
    tokens.release(tokens.consume(secret), resumable=True, session_started_at=0)
    clock.advance(15)
    with pytest.raises(TokenRejected):
        tokens.consume(secret)


def test_deliberately_closed_sessions_never_resume():
    """A session closed by a user, a timeout or a takeover leaves its token dead."""
    clock, tokens = store()
    tokens.reconnect_grace = 15
    secret, _ = tokens.mint("u", "vnc")
    tokens.release(tokens.consume(secret), resumable=False, session_started_at=0)
    with pytest.raises(TokenRejected):
        tokens.consume(secret)


def test_no_grace_configured_means_no_resume():
    """With reconnect_grace 0, dropped sessions do not resume."""
    clock, tokens = store()
    secret, _ = tokens.mint("u", "vnc")
    tokens.release(tokens.consume(secret), resumable=True, session_started_at=0)
    with pytest.raises(TokenRejected):
        tokens.consume(secret)


def test_counters_for_metrics():
    """Issued, consumed and expired tokens are counted."""
    clock, tokens = store(ttl=10)
    a, _ = tokens.mint("u", "vnc")
    tokens.mint("u", "serial")
    tokens.consume(a)
    clock.advance(11)
    tokens.mint("u", "vnc")
    assert tokens.issued == {"vnc": 2, "serial": 1}
    assert tokens.consumed == {"vnc": 1}
    assert tokens.expired == 1
