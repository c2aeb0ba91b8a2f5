"""
Console access tokens: short-lived, single-use, bound to one instance and one console type.

A token is 256 random bits, handed to the caller once. The store keeps only its SHA-256, so a
dump of the store (or of this process's memory after the fact) does not yield usable tokens.
Every grant has a short random C{id} that is safe to log; the token itself never is.

Time comes from an injected L{IReactorTime}; expired tokens are swept lazily on every mint and
consume, so the store stays bounded by the number of live tokens.

Reconnect grace: when a session ends because the viewer's connection dropped (no close from
either user: a network blip, a page reload), L{TokenStore.release} with C{resumable=True} lets
the same token open one new session within C{reconnect_grace} seconds; the new session keeps the
first one's start time, so reconnecting never extends C{max_session}. Sessions that were closed
deliberately (by the user, a takeover, a timeout, a power-off) never resume. The resume is
bound to the client address that held the session (C{[tokens] reconnect_same_address}, on by
default; off for clients behind NATs that change their public address): the same token
presented from elsewhere within the grace is refused, and the resume stays open for its owner.

A C{vnc} grant also carries a one-time 8-character VNC password for native viewers on the
xvpvnc port. VNC Authentication is a DES challenge-response keyed with the password, so the
store must keep these passwords themselves (in memory only, never logged); presenting either
the token or the password consumes the grant. Passwords do not resume.
"""

import hashlib
import secrets
from dataclasses import dataclass, field, replace
from itertools import islice

from zope.interface import implementer

from vncproxy.interfaces import ITokenStore
from vncproxy.rfb.vncauth import check_response

CONSOLE_TYPES = ("vnc", "serial")

#: One-time VNC passwords: 8 characters (all VNC Authentication uses) from an alphabet without
#: look-alikes (0/O, 1/l/I), URL-safe for vnc:// URLs: 57**8, about 2**46.7.
PASSWORD_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
PASSWORD_LENGTH = 8


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
    @ivar vnc_password: for C{vnc} grants, the one-time VNC password for native viewers (kept
        out of C{repr}); C{None} otherwise.
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
    # Set on a grant redeemed again within the reconnect grace: the first session's start.
    session_started_at: float | None = field(default=None, compare=False)
    # The client address that redeemed the token (for binding its reconnect grace), if known.
    client: str | None = field(default=None, compare=False)
    _key: bytes = field(default=b"", compare=False, repr=False)
    vnc_password: str | None = field(default=None, compare=False, repr=False)


def _digest(secret):
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


@implementer(ITokenStore)
def _oldest(entries, batch=64):
    """
    The keys of C{entries} from the oldest, a few at a time (the caller deletes as it goes).
    """
    while entries:
        keys = list(islice(entries, batch))
        yield from keys
        if len(keys) < batch:
            return


class TokenStore:
    """
    In-memory token store.

    @param clock: the L{IReactorTime} that dates tokens.
    @param ttl: seconds a token stays valid.
    """

    def __init__(self, clock, ttl, reconnect_grace=0.0, reconnect_same_address=True):
        self._clock = clock
        self.ttl = ttl
        self.reconnect_grace = reconnect_grace
        self.reconnect_same_address = reconnect_same_address
        self._grants = {}  # sha256(token) -> Grant
        self._resumable = {}  # sha256(token) -> (Grant, deadline)
        self._passwords = {}  # sha256(token) -> one-time VNC password (vnc grants only)
        self.issued = {}  # console type -> count (metrics)
        self.consumed = {}
        self.expired = 0

    def __len__(self):
        return len(self._grants)

    @staticmethod
    def key_of(secret):
        """
        What a grant keeps of its token (C{Grant._key}): to recognise a token's session later.
        """
        return _digest(secret) if isinstance(secret, str) and secret else None

    def mint(self, instance_uuid, console_type, force=False, caller=None, instance_name="",
             read_only=False):
        if console_type not in CONSOLE_TYPES:
            raise ValueError(f"unknown console type {console_type!r}")
        now = self._clock.seconds()
        self._sweep(now)
        secret = secrets.token_urlsafe(32)
        password = self._new_password() if console_type == "vnc" else None
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
            _key=_digest(secret),
            vnc_password=password,
        )
        self._grants[grant._key] = grant
        if password is not None:
            self._passwords[grant._key] = password
        self.issued[console_type] = self.issued.get(console_type, 0) + 1
        return secret, grant

    def _new_password(self):
        live = set(self._passwords.values())
        while True:  # two live grants must never share a password
            password = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))
            if password not in live:
                return password

    def consume(self, secret, now=None, client=None):
        """
        Redeem a token (see L{ITokenStore.consume}).

        @param client: the address presenting it (recorded in the grant; within the reconnect
            grace, it must be the address that held the session).
        """
        if now is None:
            now = self._clock.seconds()
        self._sweep(now)
        if not isinstance(secret, str) or not secret:
            raise TokenRejected("token missing")
        key = _digest(secret)
        grant = self._grants.pop(key, None)
        self._passwords.pop(key, None)
        if grant is not None and grant.expires_at <= now:
            self.expired += 1
            grant = None
        if grant is None:
            resumable = self._resumable.get(key)
            if resumable is not None and resumable[1] <= now:
                del self._resumable[key]
                resumable = None
            if resumable is None:
                raise TokenRejected("token invalid, used or expired")
            grant = resumable[0]
            if (self.reconnect_same_address and grant.client is not None
                    and client != grant.client):
                raise TokenRejected("token may reopen its console only from the address that "
                                    "held it")
            del self._resumable[key]
        else:
            grant = replace(grant, client=client)
        self.consumed[grant.console_type] = self.consumed.get(grant.console_type, 0) + 1
        return grant

    def match_vnc_response(self, challenge, response, now=None):
        """
        Find the live grant whose one-time VNC password produced C{response} to C{challenge}
        (VNC Authentication), without consuming it. Every live password is tried, whatever
        matches, so the time taken does not depend on which one (if any) does.

        @return: the matching L{Grant}, or C{None}.
        """
        if now is None:
            now = self._clock.seconds()
        self._sweep(now)
        found = None
        for key, password in list(self._passwords.items()):
            if check_response(password.encode("ascii"), challenge, response):
                found = self._grants[key]
        return found

    def consume_grant(self, grant):
        """
        Consume a grant found by L{match_vnc_response}: its token and its password stop
        working.

        @raise TokenRejected: when it was consumed or expired meanwhile.
        """
        live = self._grants.pop(grant._key, None)
        self._passwords.pop(grant._key, None)
        if live is None:
            raise TokenRejected("token invalid, used or expired")
        self.consumed[live.console_type] = self.consumed.get(live.console_type, 0) + 1
        return live

    def revoke_password(self, grant):
        """
        Make a grant's one-time VNC password unusable; its token keeps working.
        """
        self._passwords.pop(grant._key, None)

    def password_instances(self, now=None):
        """
        @return: the set of instance UUIDs that have a live one-time VNC password.
        """
        if now is None:
            now = self._clock.seconds()
        self._sweep(now)
        return {self._grants[key].instance_uuid for key in self._passwords}

    def release(self, grant, resumable, session_started_at):
        """
        The session C{grant} opened has ended. When C{resumable} (it dropped without a close
        from either user) and a reconnect grace is configured, the token may open one more
        session within the grace; that session inherits C{session_started_at}.
        """
        if resumable and self.reconnect_grace > 0 and grant._key:
            deadline = self._clock.seconds() + self.reconnect_grace
            self._resumable[grant._key] = (
                replace(grant, session_started_at=session_started_at), deadline)

    def reservations(self, instance_uuid, now=None):
        """
        The reconnect-grace reservations of one instance: C{(grant, deadline)} pairs, each a
        dropped session's token that may open one more session until C{deadline}.
        """
        if now is None:
            now = self._clock.seconds()
        self._sweep(now)
        return [(grant, deadline) for grant, deadline in self._resumable.values()
                if grant.instance_uuid == instance_uuid]

    def cancel_reservation(self, instance_uuid, grant_id):
        """
        Make a reconnect-grace reservation unusable.

        @return: the cancelled L{Grant}, or C{None} when there was no such reservation.
        """
        for key, (grant, _) in list(self._resumable.items()):
            if grant.instance_uuid == instance_uuid and grant.id == grant_id:
                del self._resumable[key]
                return grant
        return None

    def _sweep(self, now):
        # Every grant lives ttl seconds and every resumable entry reconnect_grace, so both
        # dicts are in order of expiry (insertion order): the sweep stops at the first live
        # entry, and costs nothing per call while nothing expires (not a scan of every live
        # token on each mint and redemption: with 10,000 sessions that was the set-up's
        # largest cost). A clock set back can leave an expired entry behind a live one:
        # consume() checks each entry's own deadline too.
        grants = self._grants
        expired = 0
        for k in _oldest(grants):
            if grants[k].expires_at > now:
                break
            del grants[k]
            self._passwords.pop(k, None)
            expired += 1
        self.expired += expired
        resumable = self._resumable
        for k in _oldest(resumable):
            if resumable[k][1] > now:
                break
            del resumable[k]
