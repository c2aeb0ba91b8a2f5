"""
Tests for L{vncproxy.admission}: the one path from a presented grant to a session or a refusal,
and its token-release rule, the same for tokens and native passwords.
"""

import pytest
from twisted.internet.task import Clock

from vncproxy import config
from vncproxy.admission import (
    CONSOLE,
    XVPVNC,
    Admitted,
    PasswordCredential,
    Refusal,
    Refused,
    TokenCredential,
)
from vncproxy.closecodes import CloseCode
from vncproxy.context import ProxyContext
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.metrics import Metrics
from vncproxy.ratelimit import FailureLimiter
from vncproxy.rfb import vnc_response
from vncproxy.sessions import SessionRegistry
from vncproxy.tokens import TokenStore

CHALLENGE = bytes(range(16))
PEER = "192.0.2.7"


class Session:
    def __init__(self, ctx, grant, refuse=None):
        self.ctx, self.grant, self.refuse = ctx, grant, refuse

    def register(self):
        if self.refuse is not None:
            raise Refused(self.refuse)
        self.ctx.sessions.admit(self.grant.instance_uuid, self.grant.console_type, self)


@pytest.fixture
def ctx():
    clock = Clock()
    tokens, sessions = TokenStore(clock, 180, reconnect_grace=30), SessionRegistry(1)
    return ProxyContext(config=config.defaults(xvpvnc_max_failures_per_instance=5),
                        reactor=clock, hypervisor=FakeHypervisor(), tokens=tokens,
                        sessions=sessions, metrics=Metrics(tokens, sessions),
                        limiter=FailureLimiter(clock, 60, slow_after=1, refuse_after=3))


def opener(ctx, refuse=None):
    return lambda grant: Session(ctx, grant, refuse)


def test_a_token_opens_a_session(ctx):
    secret, grant = ctx.tokens.mint("uuid-1", "vnc")
    outcome = ctx.admission.admit(PEER, TokenCredential(secret), CONSOLE, opener(ctx))
    assert isinstance(outcome, Admitted)
    assert outcome.grant == grant
    assert ctx.sessions.sessions("uuid-1") == [outcome.session]
    # spent
    again = ctx.admission.admit(PEER, TokenCredential(secret), CONSOLE, opener(ctx))
    assert again.close_code == CloseCode.TOKEN_INVALID and again.status == 401


def test_bad_tokens_count_against_the_address_and_then_block_it(ctx):
    outcomes = [ctx.admission.admit(PEER, TokenCredential("nope"), CONSOLE, opener(ctx))
                for _ in range(3)]
    assert [o.status for o in outcomes] == [401, 401, 401]
    assert outcomes[0].delay == 0 and outcomes[1].delay > 0
    secret, _ = ctx.tokens.mint("uuid-1", "vnc")
    blocked = ctx.admission.admit(PEER, TokenCredential(secret), CONSOLE, opener(ctx))
    assert (blocked.close_code, blocked.status) == (CloseCode.RATE_LIMITED, 429)
    # nothing was redeemed: the token still works from another address
    assert isinstance(ctx.admission.admit("192.0.2.8", TokenCredential(secret), CONSOLE,
                                          opener(ctx)), Admitted)


def test_a_token_for_another_instance_is_spent_and_counted(ctx):
    secret, _ = ctx.tokens.mint("uuid-1", "vnc", instance_name="web")
    outcome = ctx.admission.admit(PEER, TokenCredential(secret, instance="uuid-2"), CONSOLE,
                                  opener(ctx))
    assert outcome.status == 401 and "another instance" in outcome.detail
    assert ctx.limiter.failed(PEER) > 0  # the first failure was counted already
    assert isinstance(ctx.admission.admit(PEER, TokenCredential(secret), CONSOLE, opener(ctx)),
                      Refusal)


def test_the_instance_may_be_named_by_name(ctx):
    secret, _ = ctx.tokens.mint("uuid-1", "vnc", instance_name="web")
    assert isinstance(ctx.admission.admit(PEER, TokenCredential(secret, instance="web"),
                                          CONSOLE, opener(ctx)), Admitted)


def test_a_listener_refuses_console_types_it_does_not_serve(ctx):
    secret, grant = ctx.tokens.mint("uuid-1", "serial")
    outcome = ctx.admission.admit(PEER, TokenCredential(secret), XVPVNC, opener(ctx))
    assert outcome.status == 401 and f"token {grant.id} is for a serial console" in outcome.detail


@pytest.mark.parametrize("credential", ["token", "password"])
def test_a_session_refusal_hands_the_grant_back(ctx, credential):
    """The same rule for every kind of grant: refused by the session (limit, busy console),
    the grant may open a session within the reconnect grace."""
    secret, grant = ctx.tokens.mint("uuid-1", "vnc")
    refusal = Refusal(CloseCode.LIMIT_REACHED, 409, "vnc console limit reached (1 sessions)")
    presented = (TokenCredential(secret) if credential == "token" else PasswordCredential(
        CHALLENGE, vnc_response(grant.vnc_password.encode(), CHALLENGE)))
    assert ctx.admission.admit(PEER, presented, XVPVNC, opener(ctx, refusal)) == refusal
    outcome = ctx.admission.admit(PEER, TokenCredential(secret), XVPVNC, opener(ctx))
    assert isinstance(outcome, Admitted) and outcome.grant.id == grant.id


def test_a_right_password_opens_its_own_instance(ctx):
    ctx.tokens.mint("uuid-1", "vnc")
    _, grant = ctx.tokens.mint("uuid-2", "vnc")
    outcome = ctx.admission.admit(
        PEER, PasswordCredential(CHALLENGE, vnc_response(grant.vnc_password.encode(),
                                                         CHALLENGE)), XVPVNC, opener(ctx))
    assert outcome.grant.instance_uuid == "uuid-2"


def test_a_wrong_password_is_a_failure_with_a_message(ctx):
    ctx.tokens.mint("uuid-1", "vnc")
    outcome = ctx.admission.admit(PEER, PasswordCredential(CHALLENGE, b"\0" * 16), XVPVNC,
                                  opener(ctx))
    assert (outcome.close_code, outcome.text) == (CloseCode.TOKEN_INVALID,
                                                  "authentication failed")


def test_record_counts_and_audits(ctx, monkeypatch):
    audited = []
    monkeypatch.setattr("vncproxy.admission.audit", lambda event, **f: audited.append((event, f)))
    ctx.admission.record(PEER, Refusal(CloseCode.ORIGIN_REFUSED, 403, "origin 'x'"),
                         console_type="vnc")
    assert audited == [("refusal", {"peer": PEER, "reason": "origin refused: origin 'x'",
                                    "console_type": "vnc"})]
    assert "origin_refused" in ctx.metrics.render().decode()


def test_a_detail_that_says_the_reason_is_audited_once(ctx, monkeypatch):
    audited = []
    monkeypatch.setattr("vncproxy.admission.audit", lambda event, **f: audited.append((event, f)))
    ctx.admission.record(PEER, Refusal(CloseCode.TOKEN_INVALID, 401,
                                       "token invalid, used or expired"))
    assert audited[0][1]["reason"] == "token invalid, used or expired"
