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


def test_vnc_grants_carry_a_one_time_password():
    """A vnc grant has an 8-character password of unambiguous characters; serial has none."""
    from vncproxy.tokens import PASSWORD_ALPHABET

    _, tokens = store()
    passwords = {tokens.mint("u", "vnc")[1].vnc_password for _ in range(100)}
    assert len(passwords) == 100
    for password in passwords:
        assert len(password) == 8 and set(password) <= set(PASSWORD_ALPHABET)
    assert not set("0O1lI") & set(PASSWORD_ALPHABET)
    assert tokens.mint("u", "serial")[1].vnc_password is None


def test_password_is_not_in_the_grants_repr():
    """A logged grant never shows its password."""
    _, tokens = store()
    _, grant = tokens.mint("u", "vnc")
    assert grant.vnc_password not in repr(grant)


def test_vnc_response_finds_the_grant_and_consuming_it_ends_the_token():
    """A correct VNC response finds its grant; consuming it makes token and password unusable."""
    from vncproxy.rfb import vnc_response

    _, tokens = store()
    secret, grant = tokens.mint("uuid-1", "vnc")
    _, other = tokens.mint("uuid-2", "vnc")
    challenge = bytes(range(16))
    response = vnc_response(grant.vnc_password.encode(), challenge)
    assert tokens.match_vnc_response(challenge, response) == grant
    assert tokens.match_vnc_response(challenge, bytes(16)) is None
    assert tokens.consume_grant(grant) == grant
    assert tokens.match_vnc_response(challenge, response) is None
    with pytest.raises(TokenRejected):
        tokens.consume(secret)
    with pytest.raises(TokenRejected):
        tokens.consume_grant(grant)
    assert tokens.password_instances() == {"uuid-2"}
    assert tokens.match_vnc_response(
        challenge, vnc_response(other.vnc_password.encode(), challenge)) == other


def test_consuming_the_token_ends_the_password():
    """Redeeming the token also makes the grant's password unusable."""
    from vncproxy.rfb import vnc_response

    _, tokens = store()
    secret, grant = tokens.mint("uuid-1", "vnc")
    tokens.consume(secret)
    challenge = bytes(16)
    assert tokens.match_vnc_response(challenge, vnc_response(grant.vnc_password.encode(),
                                                             challenge)) is None
    assert tokens.password_instances() == set()


def test_password_expires_with_the_token():
    """After the TTL the password matches nothing."""
    from vncproxy.rfb import vnc_response

    clock, tokens = store(ttl=180)
    _, grant = tokens.mint("uuid-1", "vnc")
    challenge = bytes(16)
    response = vnc_response(grant.vnc_password.encode(), challenge)
    clock.advance(180)
    assert tokens.match_vnc_response(challenge, response) is None
    assert tokens.password_instances() == set()


def test_revoked_password_leaves_the_token_usable():
    """Revoking the password (rate limiting) keeps the token valid for the web console."""
    from vncproxy.rfb import vnc_response

    _, tokens = store()
    secret, grant = tokens.mint("uuid-1", "vnc")
    tokens.revoke_password(grant)
    challenge = bytes(16)
    assert tokens.match_vnc_response(challenge, vnc_response(grant.vnc_password.encode(),
                                                             challenge)) is None
    assert tokens.consume(secret) == grant


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


def test_resume_is_bound_to_the_address_that_held_the_session():
    """Within the grace, the token reopens only from the client that redeemed it; a try from
    elsewhere is refused and leaves the resume to its owner."""
    clock, tokens = store()
    tokens.reconnect_grace = 15
    secret, _ = tokens.mint("u", "vnc")
    first = tokens.consume(secret, client="192.0.2.5")
    assert first.client == "192.0.2.5"
    tokens.release(first, resumable=True, session_started_at=0)
    with pytest.raises(TokenRejected, match="only from the address that held it"):
        tokens.consume(secret, client="192.0.2.6")
    with pytest.raises(TokenRejected):
        tokens.consume(secret)  # an unknown address is not the owner either
    assert tokens.consume(secret, client="192.0.2.5").client == "192.0.2.5"


def test_resume_from_anywhere_when_not_bound():
    """reconnect_same_address off (clients behind changing NATs): any address resumes."""
    clock, tokens = store()
    tokens.reconnect_grace = 15
    tokens.reconnect_same_address = False
    secret, _ = tokens.mint("u", "vnc")
    tokens.release(tokens.consume(secret, client="192.0.2.5"), resumable=True,
                   session_started_at=0)
    assert tokens.consume(secret, client="198.51.100.1").instance_uuid == "u"


def test_expiry_holds_when_the_clock_was_set_back():
    """
    A token minted after the clock was set back expires before the older ones in front of
    it, which the sweep (oldest first) stops at: it is still refused at its own deadline, and
    the rest are swept when their time comes.
    """
    clock, tokens = store(ttl=180)
    old = [tokens.mint("u", "vnc")[0] for _ in range(100)]
    clock.advance(-60)  # wall clock set back
    late, _ = tokens.mint("u", "vnc")
    clock.advance(60 + 150)  # late expired 30 s ago; the older ones have 30 s left
    with pytest.raises(TokenRejected):
        tokens.consume(late)
    assert len(tokens) == 100
    clock.advance(30)
    with pytest.raises(TokenRejected):
        tokens.consume(old[-1])
    assert len(tokens) == 0 and tokens.expired == 101


def test_a_live_token_behind_an_expired_clock_jump_keeps_working():
    """Sweeping stops at the first live token; the ones after it are still checked one by one."""
    clock, tokens = store(ttl=180)
    first, _ = tokens.mint("u", "vnc")
    clock.advance(100)
    second, _ = tokens.mint("u", "vnc")
    clock.advance(100)  # first expired, second has 80 s left
    with pytest.raises(TokenRejected):
        tokens.consume(first)
    assert tokens.consume(second).instance_uuid == "u"
