"""
Signed grants: accepted when signed by a trusted issuer for this node, fresh, within the TTL and
never seen; refused with the same TokenRejected as a bad token of our own otherwise.
"""

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet.task import Clock

from vncproxy import config
from vncproxy.grants import GrantRedeemer, b64url_decode, b64url_encode, parse_public_key, sign
from vncproxy.tokens import TokenRejected, TokenStore

NOW = 1_700_000_000
ISSUER = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


def public_b64(private):
    import base64

    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def payload(**changes):
    p = {"v": 1, "node": "node1", "inst": "uuid-1", "type": "vnc", "force": False, "ro": False,
         "iat": NOW, "exp": NOW + 60, "nonce": "n" * 10 + "0123456789ab"}
    p.update(changes)
    return p


class Node:
    """A node's token store and its grant redeemer, redeeming as admission does."""

    def __init__(self, clock, grace, ttl, skew):
        self.store = TokenStore(clock, ttl, grace)
        self.verifier = GrantRedeemer(clock, [parse_public_key(public_b64(ISSUER))], "node1",
                                      ttl, skew)
        self.consumed, self.release = self.store.consumed, self.store.release

    def consume(self, secret):
        return self.verifier.redeem(secret, self.store)


def tokens(grace=0.0, ttl=180, skew=30):
    clock = Clock()
    clock.advance(NOW)
    return clock, Node(clock, grace, ttl, skew)


def test_a_valid_grant_opens_once():
    """The grant's fields become the Grant; the same string again is refused."""
    _, store = tokens()
    secret = sign(ISSUER, payload(type="serial", ro=True, force=True))
    grant = store.consume(secret)
    assert (grant.instance_uuid, grant.console_type, grant.read_only, grant.force) == (
        "uuid-1", "serial", True, True)
    assert grant.caller.startswith("issuer:") and secret not in repr(grant)
    assert store.consumed == {"serial": 1}
    with pytest.raises(TokenRejected, match="already used"):
        store.consume(secret)


@pytest.mark.parametrize("changes, why", [
    ({"node": "node2"}, "another node"),
    ({"exp": NOW - 31, "iat": NOW - 90}, "expired"),
    ({"iat": NOW + 31, "exp": NOW + 90}, "future"),
    ({"exp": NOW + 181}, "longer than token_ttl"),
    ({"v": 2}, "version"),
    ({"type": "spice"}, "console type"),
    ({"ro": True}, "serial consoles only"),
    ({"force": "yes"}, "booleans"),
    ({"nonce": "short"}, "nonce"),
    ({"exp": "soon"}, "numbers"),
    ({"exp": float("nan")}, "numbers"),
    ({"iat": float("-inf")}, "numbers"),
])
def test_refusals(changes, why):
    """Every wrong field is a TokenRejected naming the reason (never the grant)."""
    _, store = tokens()
    secret = sign(ISSUER, payload(**changes))
    with pytest.raises(TokenRejected, match=why) as e:
        store.consume(secret)
    assert secret not in str(e.value)


def test_extra_or_missing_fields_are_refused():
    _, store = tokens()
    extra = dict(payload(), admin=True)
    missing = payload()
    del missing["nonce"]
    for p in (extra, missing):
        with pytest.raises(TokenRejected, match="fields"):
            store.consume(sign(ISSUER, p))


def test_clock_skew_is_tolerated_within_the_allowance():
    """A grant up to `skew` seconds early or late passes."""
    _, store = tokens(skew=30)
    store.consume(sign(ISSUER, payload(iat=NOW + 29, exp=NOW + 89, nonce="a" * 16)))
    store.consume(sign(ISSUER, payload(iat=NOW - 80, exp=NOW - 29, nonce="b" * 16)))


def test_unknown_key_and_tampering_are_refused():
    """A stranger's signature, a changed payload and a cut signature are all refused."""
    _, store = tokens()
    with pytest.raises(TokenRejected, match="trusted issuer"):
        store.consume(sign(STRANGER, payload()))
    good = sign(ISSUER, payload())
    body, signature = good[len("cpg1."):].split(".")
    forged = json.loads(b64url_decode(body))
    forged["inst"] = "uuid-2"
    tampered = "cpg1." + b64url_encode(json.dumps(forged).encode()) + "." + signature
    with pytest.raises(TokenRejected, match="trusted issuer"):
        store.consume(tampered)
    for broken in ("cpg1.", "cpg1.x.y", good[:-4], "cpg1." + body, good + "=x", "cpg1." * 500):
        with pytest.raises(TokenRejected):
            store.consume(broken)


def test_nonces_are_remembered_until_expiry_then_forgotten():
    """The nonce set stays bounded: a nonce is dropped once its grant could not pass anyway."""
    clock, store = tokens(skew=30)
    secret = sign(ISSUER, payload())
    store.consume(secret)
    assert len(store.verifier) == 1
    clock.advance(60 + 29)
    with pytest.raises(TokenRejected, match="already used"):
        store.consume(secret)
    clock.advance(2)
    with pytest.raises(TokenRejected, match="expired"):
        store.consume(secret)
    assert len(store.verifier) == 0


def test_a_dropped_session_may_reconnect_within_the_grace():
    """Reconnect grace works for a grant as for our own tokens: once, within the grace."""
    clock, store = tokens(grace=15)
    secret = sign(ISSUER, payload())
    grant = store.consume(secret)
    store.release(grant, resumable=True, session_started_at=NOW)
    again = store.consume(secret)
    assert again.session_started_at == NOW
    with pytest.raises(TokenRejected, match="already used"):
        store.consume(secret)


def test_config_needs_node_id_and_valid_keys():
    """trusted_issuers is checked at load time, and needs node_id."""
    key = public_b64(ISSUER)
    with pytest.raises(config.ConfigError, match="needs node_id"):
        config.from_string(f"[tokens]\ntrusted_issuers = {key}\n")
    with pytest.raises(config.ConfigError, match=r"\[tokens\] trusted_issuers: .*Ed25519"):
        config.from_string("[tokens]\nnode_id = n1\ntrusted_issuers = abcd\n")
    c = config.from_string(f"[tokens]\nnode_id = n1\ntrusted_issuers = {key}\nclock_skew = 5\n")
    assert c.trusted_issuers == (key,) and c.grant_clock_skew == 5.0


def test_the_credential_for_a_presented_token():
    """Signed grants are redeemed by the verifier where the node accepts them; everything else
    (and a grant where it accepts none) is an ordinary token."""
    from types import SimpleNamespace

    from vncproxy.admission import TokenCredential
    from vncproxy.grants import SignedGrantCredential, credential

    grant = sign(ISSUER, payload())
    region = SimpleNamespace(grants=object())
    alone = SimpleNamespace(grants=None)
    assert type(credential(region, grant, "uuid-1")) is SignedGrantCredential
    assert type(credential(region, "plain-token")) is TokenCredential
    assert type(credential(region, None)) is TokenCredential
    assert type(credential(alone, grant)) is TokenCredential


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600), st.binary(max_size=300))
def test_any_string_is_a_grant_or_a_token_rejected(text, payload_bytes):
    """Whatever follows the prefix (text, or a signed payload that is not a grant's JSON),
    redeeming it either works or raises TokenRejected: never another exception."""
    _, store = tokens()
    body = b64url_encode(payload_bytes)
    signed = "cpg1." + body + "." + b64url_encode(ISSUER.sign(("cpg1." + body).encode()))
    for candidate in ("cpg1." + text, signed):
        try:
            store.consume(candidate)
        except TokenRejected:
            pass


def test_the_reference_minter_makes_grants_a_node_accepts(tmp_path):
    """tools/mint-grant keygen prints the key a node trusts; its mint prints a grant that
    node redeems once."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "tools" / "mint-grant"
    key = tmp_path / "signing.pem"
    public = subprocess.run([sys.executable, str(script), "keygen", str(key)], check=True,
                            capture_output=True, text=True).stdout.strip()
    assert key.stat().st_mode & 0o077 == 0
    minted = subprocess.run([sys.executable, str(script), "mint", str(key), "--node", "node1",
                             "--instance", "uuid-7", "--type", "serial", "--read-only",
                             "--ttl", "30"], check=True, capture_output=True, text=True)
    clock = Clock()
    clock.advance(time.time())
    node = GrantRedeemer(clock, [parse_public_key(public)], "node1", 180, 30)
    store = TokenStore(clock, 180)
    grant = node.redeem(minted.stdout.strip(), store)
    assert (grant.instance_uuid, grant.console_type, grant.read_only) == ("uuid-7", "serial", True)
    with pytest.raises(TokenRejected):
        node.redeem(minted.stdout.strip(), store)
