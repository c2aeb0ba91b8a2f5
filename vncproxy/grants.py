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

L{SignedGrantTokens} wraps the node's L{TokenStore}: strings with the C{cpg1.} prefix are
verified here, everything else (and every other method) is the store's. A redeemed grant is an
ordinary L{Grant}, so every session rule applies to it exactly as to our own tokens; its
reconnect grace is the store's too (the store remembers released grants by the digest of the
string that opened them).
"""

import base64
import binascii
import hashlib
import json
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
        return payload.get("nonce") in self._nonces

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
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (iat, exp)):
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


class SignedGrantTokens:
    """
    The node's token store, also redeeming signed grants (see the module docstring).

    @param store: the L{vncproxy.tokens.TokenStore}.
    @param verifier: a L{GrantVerifier}.
    """

    def __init__(self, store, verifier):
        self._store = store
        self.verifier = verifier

    def consume(self, secret, now=None):
        if not is_signed_grant(secret):
            return self._store.consume(secret, now)
        if self.verifier.seen(secret, now):
            # Its nonce was redeemed: only a reconnect within the store's grace may reopen it.
            try:
                return self._store.consume(secret, now)
            except TokenRejected:
                raise TokenRejected("signed grant already used") from None
        grant = self.verifier.verify(secret, now)
        consumed = self._store.consumed  # the same counter as our own tokens' (metrics)
        consumed[grant.console_type] = consumed.get(grant.console_type, 0) + 1
        return grant

    def __len__(self):
        return len(self._store)

    def __getattr__(self, name):
        return getattr(self._store, name)


def signed_grant_tokens(store, config, clock):
    """
    C{store} wrapped to also redeem the grants of C{config.trusted_issuers}.
    """
    issuers = [parse_public_key(k) for k in config.trusted_issuers]
    verifier = GrantVerifier(clock, issuers, config.node_id, config.token_ttl,
                             config.grant_clock_skew)
    return SignedGrantTokens(store, verifier)
