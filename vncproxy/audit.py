"""
Audit events: one structured log event per grant, connect, refusal, close, serial log read
and serial log clear, in the
C{consoleproxy.audit} namespace, with named fields (instance, console_type, peer, caller,
duration, bytes_to_viewer, bytes_from_viewer, reason). Never a secret: callers pass grant ids,
not tokens.
"""

from twisted.logger import Logger

_log = Logger(namespace="consoleproxy.audit")

_TEMPLATES = {
    "grant": "granted {console_type} console of {instance} to {caller} (grant {grant_id})",
    "connect": "{console_type} console of {instance} opened from {peer} (grant {grant_id})",
    "refusal": "refused {console_type} console from {peer}: {reason}",
    "sessions_listed": "{caller} listed the {count} console sessions of {instance}",
    "session_ended": ("{caller} ended {console_type} console session {session_id} of {instance} "
                      "(grant {grant_id})"),
    "action": "{caller} sent {action} to {instance}",
    "log_read": "serial console log of {instance} read by {caller} from {peer} ({size} bytes)",
    "log_clear": "serial console log of {instance} cleared by {caller} from {peer}",
    "close": ("{console_type} console of {instance} from {peer} closed after {duration:.1f}s: "
              "{reason} ({bytes_to_viewer} bytes to viewer, {bytes_from_viewer} from viewer)"),
}


def refusal_reason(reason, detail):
    """
    A refusal's reason with its detail after a colon, unless the detail already says the reason
    ("token invalid, used or expired" is not written "token invalid: token invalid, used or
    expired").
    """
    if not detail:
        return reason
    return detail if detail.startswith(reason) else f"{reason}: {detail}"


def audit(event, **fields):
    """
    Emit one audit event; C{event} is one of grant, connect, refusal, close, sessions_listed,
    session_ended, action, log_read, log_clear.
    """
    fields.setdefault("console_type", "-")
    _log.info(_TEMPLATES[event], audit=event, **fields)
