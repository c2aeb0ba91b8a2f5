"""
Admission: a presented grant becomes either a L{Refusal} or an admitted session.

Every listener admits the same way (L{Admission.admit})::

    1. the address is over the failure limit           -> 429 / RATE_LIMITED, nothing redeemed
    2. the credential is redeemed (credential.redeem)   -> a Grant, or a Refusal
         bad token / wrong password: counted against the address, answered after its delay
    3. the grant fits the listener (instance, type)     -> else 401 / TOKEN_INVALID, counted
    4. the listener opens a session for it and the      -> else the grant is handed back and
       session registers (limits, hub admission)           the refusal is the session's (409)
    5. Admitted(grant, session)

The token-release rule, the same everywhere: a grant is spent once step 2 redeemed it, except
when step 4 refuses (the instance is at its limit, the serial console is busy or unavailable):
then the presenter did nothing wrong and the grant is handed back with
L{vncproxy.tokens.TokenStore.release} (it may open a session within the reconnect grace). A
grant refused at step 3 was shown where it does not belong; it stays spent.

Extension points:

  - another kind of grant: a credential class with C{kind} (for logs) and
    C{redeem(admission, peer)} returning a L{vncproxy.tokens.Grant} or raising L{Refused};
    L{TokenCredential} and L{PasswordCredential} are the two we have, and
    L{vncproxy.grants.SignedGrantCredential} (a region's signed grant) is a token credential
    with its own C{consume}.
  - another listener: a L{Listener} naming the console types it serves, and a C{open_session}
    callable that makes its session for a grant; the session's C{register()} registers it (or
    raises L{Refused}) and C{start()} runs it once the listener hands the connection over.

L{Admission.record} counts and audits a refusal; listeners call it for their own refusals too
(bad requests, foreign origins, time-outs), so every refusal is counted and audited alike.
"""

from dataclasses import dataclass, field

from vncproxy.audit import audit, refusal_reason
from vncproxy.closecodes import REASONS, CloseCode
from vncproxy.tokens import TokenRejected

WRONG_PASSWORD = "authentication failed"
ADDRESS_LOCKED = "too many failed attempts from your address; try again later"


@dataclass(frozen=True)
class Refusal:
    """
    Why a grant was not admitted.

    @ivar close_code: the L{CloseCode} it is counted, audited and (on a WebSocket) reported as.
    @ivar status: the HTTP status of the refusal (WebSocket upgrade, CONNECT).
    @ivar detail: for the audit and logs; never holds a secret.
    @ivar message: what a viewer may be told where its protocol carries text (RFB failure
        reason); defaults to the close code's reason.
    @ivar delay: seconds to wait before answering (rate limiting).
    """

    close_code: CloseCode
    status: int
    detail: str
    message: str = ""
    delay: float = 0.0

    @property
    def reason(self):
        return REASONS[self.close_code]

    @property
    def text(self):
        return self.message or self.reason


class Refused(Exception):
    """
    Raised by a credential or a session to refuse; carries the L{Refusal}.
    """

    def __init__(self, refusal):
        super().__init__(refusal.detail)
        self.refusal = refusal


@dataclass(frozen=True)
class Admitted:
    grant: object
    session: object


@dataclass(frozen=True)
class Listener:
    """
    What a listener admits into.

    @ivar name: for logs (C{"console"}, C{"xvpvnc"}, ...).
    @ivar console_types: the grant console types it serves.
    """

    name: str
    console_types: tuple


CONSOLE = Listener("console", ("vnc", "serial"))
XVPVNC = Listener("xvpvnc", ("vnc",))


# -- credentials: the kinds of grant a client presents ---------------------------------------

@dataclass(frozen=True)
class TokenCredential:
    """
    A console token (query parameter, cookie, CONNECT target). C{instance}: the instance the
    URL names, when it names one (the IBM path); the grant must be for it.
    """

    secret: object = field(repr=False)
    instance: str | None = None
    kind = "token"

    def redeem(self, admission, peer):
        ctx = admission.ctx
        try:
            grant = self.consume(ctx, client=peer)
        except TokenRejected as e:
            raise Refused(admission.failure(peer, str(e))) from None
        if self.instance is not None and self.instance not in (grant.instance_uuid,
                                                               grant.instance_name):
            raise Refused(admission.failure(peer, f"token {grant.id} is for another instance"))
        return grant

    def consume(self, ctx, client=None):
        """
        The grant the secret carries (spent from now on). Other kinds of token override this.

        @param client: the presenting address (a resumed session must come from the one that
            held it, see L{vncproxy.tokens}).
        @raise TokenRejected: when it carries none.
        """
        return ctx.tokens.consume(self.secret, client=client)


@dataclass(frozen=True)
class PasswordCredential:
    """
    A native viewer's VNC Authentication response to our challenge, checked against every live
    one-time password. A wrong one counts against the presenting address only; the global
    pace of these checks is the listener's L{vncproxy.ratelimit.GuessBudget}.
    """

    challenge: bytes = field(repr=False)
    response: bytes = field(repr=False)
    kind = "password"

    def redeem(self, admission, peer):
        ctx = admission.ctx
        grant = ctx.tokens.match_vnc_response(self.challenge, self.response)
        if grant is None:
            raise Refused(admission.failure(peer, "wrong password", WRONG_PASSWORD))
        try:
            return ctx.tokens.consume_grant(grant)
        except TokenRejected:
            raise Refused(Refusal(CloseCode.TOKEN_INVALID, 401, "password expired meanwhile",
                                  WRONG_PASSWORD)) from None


class Admission:
    """
    The service's one admission path.

    @param ctx: the L{vncproxy.context.ProxyContext}.
    """

    def __init__(self, ctx):
        self.ctx = ctx

    def admit(self, peer, credential, listener, open_session):
        """
        @param peer: the client's address (the failure limits' key).
        @param credential: what the client presented (a credential, see the module docstring).
        @param listener: the L{Listener} it presented it on.
        @param open_session: C{open_session(grant)} -> the listener's session for the grant.
        @return: L{Admitted} or L{Refusal} (not yet recorded: the caller records it, with its
            own log fields, by L{record}).
        """
        if self.ctx.limiter.blocked(peer):
            return Refusal(CloseCode.RATE_LIMITED, 429,
                           "too many failed attempts from this address", ADDRESS_LOCKED)
        try:
            grant = credential.redeem(self, peer)
        except Refused as e:
            return e.refusal
        if grant.console_type not in listener.console_types:
            return Refusal(CloseCode.TOKEN_INVALID, 401,
                           f"token {grant.id} is for a {grant.console_type} console")
        session = open_session(grant)
        try:
            session.register()
        except Refused as e:
            self.ctx.tokens.release(grant, resumable=True,
                                    session_started_at=grant.session_started_at)
            return e.refusal
        return Admitted(grant, session)

    def failure(self, peer, detail, message=""):
        """
        A bad token or a wrong password from C{peer}: counted against its address; the
        refusal is answered after the limiter's delay.
        """
        return Refusal(CloseCode.TOKEN_INVALID, 401, detail, message,
                       delay=self.ctx.limiter.failed(peer))

    def record(self, peer, refusal, **fields):
        """
        Count and audit a refusal (C{fields}: extra audit fields such as C{console_type}).
        """
        self.ctx.metrics.refused(refusal.reason.replace(" ", "_"))
        audit("refusal", peer=peer, reason=refusal_reason(refusal.reason, refusal.detail),
              **fields)


__all__ = ["ADDRESS_LOCKED", "Admission", "Admitted", "CONSOLE", "Listener",
           "PasswordCredential", "Refusal", "Refused", "TokenCredential", "WRONG_PASSWORD",
           "XVPVNC"]
