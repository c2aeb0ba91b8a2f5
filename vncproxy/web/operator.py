"""
The operator's routes of the token API: who is on an instance's consoles, ending a session,
and console actions (keys, SysRq, NMI).

    GET    /v1/instances/{instance}/console_sessions               every session, every kind
    DELETE /v1/instances/{instance}/console_sessions/{session_id}  close it with 4014
    POST   /v1/instances/{instance}/console_actions                202 once libvirt took it

Sessions come from the L{vncproxy.sessions.SessionRegistry} (live sessions of every listener)
and the token store's reconnect-grace reservations (a dropped session's token that may still
reopen it: listed with C{"state": "reconnect_grace"}, id C{grace-GRANTID}). Each call is
audited with the API key's id.
"""

from twisted.internet import defer

from vncproxy.actions import BadAction, parse_action
from vncproxy.audit import audit
from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import HypervisorError, InstanceNotRunning, NoSuchInstance
from vncproxy.web.errors import ApiError, read_json_object
from vncproxy.web.lookup import describe_instance, iso_utc
from vncproxy.web.site import MAX_BODY

GRACE_PREFIX = "grace-"


def _reservation_row(grant, deadline):
    return {
        "id": GRACE_PREFIX + grant.id,
        "state": "reconnect_grace",
        "console_type": grant.console_type,
        "mode": "read_only" if grant.read_only else "interactive",
        "client": None,
        "listener": None,
        "started_at": iso_utc(grant.session_started_at),
        "last_activity_at": None,
        "bytes_to_viewer": 0,
        "bytes_from_viewer": 0,
        "grant_id": grant.id,
        "reserved_until": iso_utc(deadline),
    }


class OperatorRoutes:
    """
    @param ctx: the L{vncproxy.context.ProxyContext}.
    """

    def __init__(self, ctx):
        self._ctx = ctx

    def _lookup(self, instance):
        return describe_instance(self._ctx, instance)

    def routes(self):
        """
        (method, path template, handler, needs an API key) rows for the API's route table.
        """
        base = "/v1/instances/{instance}"
        return [
            ("GET", base + "/console_sessions", self.list_sessions, True),
            ("DELETE", base + "/console_sessions/{session_id}", self.end_session, True),
            ("POST", base + "/console_actions", self.console_action, True),
        ]

    @defer.inlineCallbacks
    def list_sessions(self, request, caller, instance):
        info = yield self._lookup(instance)
        rows = []
        for entry in self._ctx.sessions.entries(info.uuid):
            row = entry.describe()
            row["started_at"] = iso_utc(row["started_at"])
            row["last_activity_at"] = iso_utc(row["last_activity_at"])
            rows.append(row)
        rows += [_reservation_row(g, d) for g, d in self._ctx.tokens.reservations(info.uuid)]
        audit("sessions_listed", instance=info.uuid, caller=caller, count=len(rows))
        return 200, {"sessions": rows}

    @defer.inlineCallbacks
    def end_session(self, request, caller, instance, session_id):
        info = yield self._lookup(instance)
        entry = self._ctx.sessions.find(info.uuid, session_id)
        if entry is not None:
            console_type, grant = entry.console_type, entry.session.grant
            entry.session.close(CloseCode.ENDED_BY_OPERATOR)
        else:
            grant = None
            if session_id.startswith(GRACE_PREFIX):
                grant = self._ctx.tokens.cancel_reservation(info.uuid,
                                                            session_id[len(GRACE_PREFIX):])
            if grant is None:
                raise ApiError(404, f"no console session {session_id[:40]!r} of instance "
                                    f"{instance}")
            console_type = grant.console_type
        audit("session_ended", console_type=console_type, instance=info.uuid, caller=caller,
              session_id=session_id, grant_id=grant.id)
        request.setResponseCode(204)
        return b""

    @defer.inlineCallbacks
    def console_action(self, request, caller, instance):
        body = read_json_object(request, MAX_BODY)
        try:
            action = parse_action(body)
        except BadAction as e:
            raise ApiError(400, str(e)) from None
        info = yield self._lookup(instance)
        yield perform(self._ctx, info, action, caller)
        return 202, {"action": action.name, "instance": info.uuid}


@defer.inlineCallbacks
def perform(ctx, info, action, caller):
    """
    Carry out a checked action on a described instance, audited; refusals as L{ApiError}
    (409 not running, 404 gone, 503 hypervisor unavailable).
    """
    if not info.active:
        raise ApiError(409, f"instance {info.name} is not running")
    try:
        yield action.perform(ctx.hypervisor, info.uuid)
    except InstanceNotRunning:
        raise ApiError(409, f"instance {info.name} is not running") from None
    except NoSuchInstance:
        raise ApiError(404, f"instance {info.name} not found") from None
    except HypervisorError as e:
        raise ApiError(503, f"the hypervisor refused {action.name}: {str(e)[:200]}") from None
    audit("action", instance=info.uuid, caller=caller, action=action.describe())
