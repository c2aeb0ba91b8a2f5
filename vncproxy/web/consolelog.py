"""
The serial console log routes of the token API: reading a log (raw bytes, or plain text without
the guest's escape sequences), following it live, and clearing it.

    GET    /v1/instances/{instance}/console_log[?tail=N][&format=raw|text][&follow=true]
    DELETE /v1/instances/{instance}/console_log

Both answer 501 when serial consoles are not enabled. A follower joins the console before the
tail is read, so nothing is lost or repeated in between (L{vncproxy.web.logfollow} streams the
rest). Each read and each clear is audited with the API key's id and the client's address.
"""

import re

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET

from vncproxy.audit import audit
from vncproxy.serial.hub import HubFull
from vncproxy.serial.manager import SerialUnavailable
from vncproxy.serial.text import plain_text
from vncproxy.web.errors import ApiError
from vncproxy.web.logfollow import LogFollower
from vncproxy.web.lookup import describe_instance
from vncproxy.web.site import request_client

_TAIL = re.compile(r"[0-9]{1,15}")
_BOOLEANS = {b"true": True, b"1": True, b"false": False, b"0": False}


class ConsoleLogRoutes:
    """
    @param ctx: the L{vncproxy.context.ProxyContext}.
    """

    # the API's namespace, as when these routes were part of it: log filters keep working
    _log = Logger(namespace="vncproxy.web.api.ApiResource")

    def __init__(self, ctx):
        self._ctx = ctx

    def routes(self):
        """
        (method, path template, handler, needs an API key) rows for the API's route table.
        """
        path = "/v1/instances/{instance}/console_log"
        return [
            ("GET", path, self.get_log, True),
            ("DELETE", path, self.clear_log, True),
        ]

    def _instance(self, instance):
        if self._ctx.serial is None:
            raise ApiError(501, "serial consoles are not enabled")
        return describe_instance(self._ctx, instance)

    @defer.inlineCallbacks
    def get_log(self, request, caller, instance):
        tail = None
        raw = request.args.get(b"tail")
        if raw:
            text = raw[0].decode("ascii", "replace")
            if not _TAIL.fullmatch(text):
                raise ApiError(400, "tail must be a number of bytes")
            tail = int(text)
        form = request.args.get(b"format", [b"raw"])[0]
        if form not in (b"raw", b"text"):
            raise ApiError(400, "format must be raw or text")
        follow = request.args.get(b"follow", [b"false"])[0]
        if follow not in _BOOLEANS:
            raise ApiError(400, "follow must be true or false")
        if _BOOLEANS[follow] and form == b"text":
            raise ApiError(400, "follow streams the raw log: format=text cannot follow")
        info = yield self._instance(instance)
        manager = self._ctx.serial
        follower = None
        if _BOOLEANS[follow] and manager.is_captured(info.uuid):
            follower = LogFollower(request, info.uuid)
            try:  # joined before the tail is read: nothing is lost or repeated in between
                place = manager.attach(info.uuid, follower, interactive=False, scrollback=False)
            except (HubFull, SerialUnavailable) as e:
                raise ApiError(409, f"cannot follow the console log: {e}") from None
        data = manager.log(info.uuid).tail(tail)
        audit("log_read", console_type="serial", instance=info.uuid, caller=caller,
              peer=request_client(request), size=len(data))
        request.setResponseCode(200)
        request.setHeader(b"cache-control", b"no-store")
        if form == b"text":
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return plain_text(data).encode("utf-8")
        request.setHeader(b"content-type", b"application/octet-stream")
        if follower is None:
            return data
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.write(data)
        follower.follow(place)
        self._log.info("{caller} follows the console log of {instance}", caller=caller,
                       instance=info.uuid, event="follow_log")
        return NOT_DONE_YET

    @defer.inlineCallbacks
    def clear_log(self, request, caller, instance):
        info = yield self._instance(instance)
        self._ctx.serial.clear(info.uuid)
        audit("log_clear", console_type="serial", instance=info.uuid, caller=caller,
              peer=request_client(request))
        request.setResponseCode(204)
        return b""
