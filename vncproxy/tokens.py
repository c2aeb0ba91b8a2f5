"""
Console access tokens: short-lived, single-use, bound to one instance and one console type.

A token is 256 random bits, handed to the caller once. The store keeps only its SHA-256, so a
dump of the store (or of this process's memory after the fact) does not yield usable tokens.
Every grant has a short random C{id} that is safe to log; the token itself never is.

Time comes from an injected L{IReactorTime}; expired tokens are swept lazily on every mint and
consume, so the store stays bounded by the number of live tokens.
"""

import hashlib
import secrets
from dataclasses import dataclass, field

from zope.interface import implementer

from vncproxy.interfaces import ITokenStore

CONSOLE_TYPES = ("vnc", "serial")


class TokenRejected(Exception):
    """
    The token is unknown, already used, or expired. The message never contains the token.
    """


@dataclass(frozen=True)
class Grant:
    """
    What a token authorizes.

    @ivar id: a short random identifier for logs and audit (not a secret).
    @ivar instance_uuid: the domain the token opens.
    @ivar console_type: C{"vnc"} or C{"serial"}.
    @ivar read_only: for serial: the session may watch but not type, and does not count
        against the one interactive session.
    """

    id: str
    instance_uuid: str
    instance_name: str
    console_type: str
    force: bool
    created_at: float
    expires_at: float
    caller: str | None = field(default=None, compare=False)
    read_only: bool = False


def _digest(secret):
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


@implementer(ITokenStore)
class TokenStore:
    """
    In-memory token store.

    @param clock: the L{IReactorTime} that dates tokens.
    @param ttl: seconds a token stays valid.
    """

    def __init__(self, clock, ttl):
        self._clock = clock
        self.ttl = ttl
        self._grants = {}  # sha256(token) -> Grant

    def __len__(self):
        return len(self._grants)

    def mint(self, instance_uuid, console_type, force=False, caller=None, instance_name="",
             read_only=False):
        if console_type not in CONSOLE_TYPES:
            raise ValueError(f"unknown console type {console_type!r}")
        now = self._clock.seconds()
        self._sweep(now)
        secret = secrets.token_urlsafe(32)
        grant = Grant(
            id=secrets.token_hex(6),
            instance_uuid=instance_uuid,
            instance_name=instance_name,
            console_type=console_type,
            force=bool(force),
            created_at=now,
            expires_at=now + self.ttl,
            caller=caller,
            read_only=bool(read_only),
        )
        self._grants[_digest(secret)] = grant
        return secret, grant

    def consume(self, secret, now=None):
        if now is None:
            now = self._clock.seconds()
        self._sweep(now)
        if not isinstance(secret, str) or not secret:
            raise TokenRejected("token missing")
        grant = self._grants.pop(_digest(secret), None)
        if grant is None:
            raise TokenRejected("token invalid, used or expired")
        return grant

    def _sweep(self, now):
        expired = [k for k, g in self._grants.items() if g.expires_at <= now]
        for k in expired:
            del self._grants[k]
