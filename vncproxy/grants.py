"""
Signed grants: console tokens minted by a region's control plane, not by this node.

A grant is a compact, URL-safe string (the format is documented in C{docs/region.md})::

    cpg1.<payload>.<signature>

C{payload} is the unpadded base64url of a JSON object; C{signature} the unpadded base64url of
the Ed25519 signature of the ASCII bytes C{"cpg1." + payload}. The payload's keys:

    v      1 (the format version; the prefix names it too)
    node   the node id the grant is for ([tokens] node_id)
    inst   the instance UUID
    type   "vnc" or "serial"
    force  true/false (serial: take the console over)
    ro     true/false (serial: watch only)
    iat    issued at, Unix seconds
    exp    expires at, Unix seconds
    nonce  16 to 64 URL-safe characters, unique per grant

The node accepts a grant signed by one of C{[tokens] trusted_issuers} (raw Ed25519 public keys,
base64), for its own node id, issued no later than C{now + skew}, not expired (C{exp + skew >
now}), living no longer than C{token_ttl}, and never seen before: nonces are remembered until
their grant has expired. Whatever is wrong, the refusal is the same L{TokenRejected} as for a bad
token of our own (the reason, logged and audited, says which; it never contains the grant).

Admission (L{vncproxy.admission}) redeems a C{cpg1.} string presented where a token goes as a
L{SignedGrantCredential} (see L{credential}); a redeemed grant is an ordinary L{Grant}, so every
session rule applies to it exactly as to our own tokens, and a refusal is a bad token's; its
reconnect grace is the token store's too (the store remembers released grants by the digest of
the string that opened them).
"""

import base64
import binascii
import hashlib
import json
import math
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vncproxy.admission import TokenCredential
from vncproxy.tokens import CONSOLE_TYPES, Grant, TokenRejected, _digest

PREFIX = "cpg1."
VERSION = 1
#: Longest grant string looked at (a valid one is about 330 characters).
MAX_LENGTH = 2048
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_FIELDS = {"v", "node", "inst", "type", "force", "ro", "iat", "exp", "nonce"}


def b64url_decode(text):
    """
    Unpadded (or padded) base64url to bytes; L{ValueError} on anything else.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse_public_key(text):
    """
    One trusted issuer: the 32 raw bytes of an Ed25519 public key in base64 or base64url.

    @raise ValueError: when it is not one.
    """
    try:
        raw = b64url_decode(text.replace("+", "-").replace("/", "_"))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{text[:60]!r} is not a base64 Ed25519 public key (32 bytes)")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(public_key):
    """
    A short, stable name for an issuer's key in logs and audit: the first 8 base64url
    characters of the SHA-256 of its raw bytes.
    """
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return b64url_encode(hashlib.sha256(raw).digest())[:8]


def sign(private_key, payload):
    """
    The grant string for C{payload} (a dict), signed with C{private_key}
    (an C{Ed25519PrivateKey}). The reference minter (C{tools/mint-grant}) and the tests use it.
    """
    body = b64url_encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signed = (PREFIX + body).encode("ascii")
    return PREFIX + body + "." + b64url_encode(private_key.sign(signed))


def is_signed_grant(secret):
    return isinstance(secret, str) and secret.startswith(PREFIX)


class GrantVerifier:
    """
    Checks signed grants and remembers their nonces.

    @param clock: an L{IReactorTime}.
    @param issuers: the trusted Ed25519 public keys.
    @param node_id: this node's id; a grant must name it.
    @param max_ttl: the longest life a grant may have (C{exp - iat}), in seconds.
    @param skew: seconds of clock difference with the issuer tolerated on C{iat} and C{exp}.
    """

    def __init__(self, clock, issuers, node_id, max_ttl, skew):
        self._clock = clock
        self._issuers = [(key_id(k), k) for k in issuers]
        self.node_id = node_id
        self.max_ttl = max_ttl
        self.skew = skew
        self._nonces = {}  # nonce -> when it may be forgotten (its grant can no longer pass)
        self.accepted = 0

    def __len__(self):
        return len(self._nonces)

    def verify(self, secret, now=None):
        """
        @return: the L{Grant} that C{secret} carries; its nonce is remembered from now on.
        @raise TokenRejected: for anything but a valid, fresh grant for this node.
        """
        if now is None:
            now = self._clock.seconds()
        self._sweep(now)
        issuer, payload = self._authentic(secret)
        self._check_payload(payload, now)
        nonce = payload["nonce"]
        if nonce in self._nonces:
            raise TokenRejected("signed grant already used")
        self._nonces[nonce] = payload["exp"] + self.skew
        self.accepted += 1
        key = _digest(secret)
        return Grant(
            id="g" + key.hex()[:11],
            instance_uuid=payload["inst"],
            instance_name="",
            console_type=payload["type"],
            force=payload["force"],
            created_at=now,
            expires_at=min(payload["exp"] + self.skew, now + self.max_ttl),
            caller=f"issuer:{issuer}",
            read_only=payload["ro"],
            _key=key,
        )

    def seen(self, secret, now=None):
        """
        Whether C{secret} is an authentic grant whose nonce was already redeemed here (a
        reconnect within the grace may redeem it once more through the token store).
        """
        if now is None:
            now = self._clock.seconds()
        self._sweep(now)
        try:
            _, payload = self._authentic(secret)
        except TokenRejected:
            return False
        nonce = payload.get("nonce") if isinstance(payload, dict) else None
        return isinstance(nonce, str) and nonce in self._nonces

    def _authentic(self, secret):
        if not is_signed_grant(secret) or len(secret) > MAX_LENGTH:
            raise TokenRejected("signed grant malformed")
        body, dot, signature = secret[len(PREFIX):].partition(".")
        try:
            raw_signature = b64url_decode(signature)
            raw_body = b64url_decode(body)
        except ValueError:
            raise TokenRejected("signed grant malformed") from None
        if not dot or len(raw_signature) != 64:
            raise TokenRejected("signed grant malformed")
        signed = (PREFIX + body).encode("ascii")
        for name, public_key in self._issuers:
            try:
                public_key.verify(raw_signature, signed)
            except InvalidSignature:
                continue
            try:
                payload = json.loads(raw_body)
            except ValueError:
                raise TokenRejected(f"signed grant from {name}: payload is not JSON") from None
            return name, payload
        raise TokenRejected("signed grant: no trusted issuer's signature")

    def _check_payload(self, payload, now):
        if not isinstance(payload, dict) or set(payload) != _FIELDS:
            raise TokenRejected("signed grant: wrong fields")
        if payload["v"] != VERSION:
            raise TokenRejected("signed grant: unknown version")
        if payload["node"] != self.node_id:
            raise TokenRejected("signed grant is for another node")
        if payload["type"] not in CONSOLE_TYPES or not isinstance(payload["inst"], str) \
                or not payload["inst"]:
            raise TokenRejected("signed grant: bad instance or console type")
        if not isinstance(payload["force"], bool) or not isinstance(payload["ro"], bool):
            raise TokenRejected("signed grant: force and ro must be booleans")
        if payload["ro"] and payload["type"] != "serial":
            raise TokenRejected("signed grant: ro applies to serial consoles only")
        if not isinstance(payload["nonce"], str) or not _NONCE.fullmatch(payload["nonce"]):
            raise TokenRejected("signed grant: bad nonce")
        iat, exp = payload["iat"], payload["exp"]
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                   for t in (iat, exp)):
            raise TokenRejected("signed grant: iat and exp must be numbers")
        if exp - iat > self.max_ttl or exp <= iat:
            raise TokenRejected("signed grant: lifetime longer than token_ttl")
        if iat > now + self.skew:
            raise TokenRejected("signed grant issued in the future")
        if exp + self.skew <= now:
            raise TokenRejected("signed grant expired")

    def _sweep(self, now):
        stale = [n for n, until in self._nonces.items() if until <= now]
        for n in stale:
            del self._nonces[n]


class GrantRedeemer(GrantVerifier):
    """
    A L{GrantVerifier} that also lets a grant reconnect within the token store's grace.
    """

    def redeem(self, secret, tokens, now=None):
        """
        @param tokens: the node's L{vncproxy.tokens.TokenStore}: a grant whose session dropped
            is remembered there (by the digest of the grant string) for the reconnect grace,
            like our own tokens; it also counts redeemed grants with our own.
        @return: the L{Grant}.
        @raise TokenRejected: see L{GrantVerifier.verify}.
        """
        if self.seen(secret, now):
            try:
                return tokens.consume(secret, now)
            except TokenRejected:
                raise TokenRejected("signed grant already used") from None
        grant = self.verify(secret, now)
        tokens.consumed[grant.console_type] = tokens.consumed.get(grant.console_type, 0) + 1
        return grant


@dataclass(frozen=True)
class SignedGrantCredential(TokenCredential):
    """
    A signed grant presented where a token goes (L{vncproxy.admission}): redeemed by the
    verifier instead of the token store; every other rule is the token's.
    """

    kind = "signed grant"

    def consume(self, ctx, client=None):
        return ctx.grants.redeem(self.secret, ctx.tokens)


def credential(ctx, secret, instance=None):
    """
    The credential for a token presented on a listener: a signed grant when this node accepts
    them and C{secret} is one, else a token (a "cpg1." string on a node that accepts no signed
    grants is just a token it does not know).
    """
    if ctx.grants is not None and is_signed_grant(secret):
        return SignedGrantCredential(secret, instance)
    return TokenCredential(secret, instance)


def verifier_for(config, clock):
    """
    The node's L{GrantRedeemer}, or C{None} without C{[tokens] trusted_issuers}.
    """
    if not config.trusted_issuers:
        return None
    issuers = [parse_public_key(k) for k in config.trusted_issuers]
    return GrantRedeemer(clock, issuers, config.node_id, config.token_ttl,
                         config.grant_clock_skew)
