"""
L{SerialSession}: one WebSocket viewer of an instance's serial hub.

::

    onConnect   register(): join the hub (HubBusy / HubFull / SerialUnavailable -> HTTP 409;
                a forced token closes the current writer with TAKEN_OVER), register with the
                session registry (so power-off and service stop close it too)
    onOpen      start(): idle and max-length timers; the hub sends the scrollback, then live
                output
    onMessage   viewer_data(): the writer's input goes to the console, a read-only viewer's
                is dropped (binary frames, and text frames as their UTF-8 bytes)
    onClose     viewer_lost(resumable): a drop without a close from the user leaves the token
                usable for one more session within the reconnect grace
    close()     from the registry, the timers or the hub (taken over, too slow, stopped): close
                frame with the code and reason; such sessions never resume

The session is the hub's sink (an L{IHubSink}); its viewer, the WebSocket side, is an
L{ISerialViewer}.
"""

from zope.interface import implementer

from vncproxy.admission import Refusal, Refused
from vncproxy.audit import audit
from vncproxy.closecodes import CloseCode, reason_for
from vncproxy.interfaces import IHubSink
from vncproxy.serial.hub import HubBusy, HubFull
from vncproxy.serial.manager import SerialUnavailable
from vncproxy.sessions import Listed, SessionTimer


@implementer(IHubSink)
class SerialSession(Listed):
    """
    @param ctx: the L{vncproxy.context.ProxyContext} (its C{serial} is the L{SerialManager}).
    @param grant: the L{vncproxy.tokens.Grant} (C{force}, C{read_only}).
    @param viewer: the L{ISerialViewer} (the WebSocket side).
    @param peer: the viewer's address, for logs.
    """

    def __init__(self, ctx, grant, viewer, peer):
        self._ctx = ctx
        self._grant = grant
        self._viewer = viewer
        self._peer = peer
        self._place = None
        self._opened = False
        self._closed = False
        self._started_at = None
        self._timer = SessionTimer(ctx.reactor, ctx.config.idle_timeout, ctx.config.max_session,
                                   lambda code: self._end(code, None))

    @property
    def interactive(self):
        return not self._grant.read_only

    @property
    def bytes_to_viewer(self):
        return self._place.bytes_sent if self._place is not None else 0

    @property
    def bytes_from_viewer(self):
        return self._place.bytes_typed if self._place is not None else 0

    # -- the WebSocket's side ----------------------------------------------------------------

    def register(self):
        """
        Join the hub and the session registry (L{vncproxy.admission}, step 4), under the name
        of the listener the viewer came in on (its adapter's C{listener}).

        @raise Refused: 409 when the console is busy, full or not being captured.
        """
        grant, manager = self._grant, self._ctx.serial
        if manager is None:
            raise Refused(Refusal(CloseCode.CONSOLE_UNAVAILABLE, 501,
                                  "serial consoles are not enabled"))
        try:
            self._place = manager.attach(grant.instance_uuid, self, self.interactive,
                                         force=grant.force)
        except SerialUnavailable as e:
            raise Refused(Refusal(CloseCode.CONSOLE_UNAVAILABLE, 409, str(e))) from None
        except HubBusy:
            raise Refused(Refusal(CloseCode.LIMIT_REACHED, 409,
                                  "serial console in use")) from None
        except HubFull as e:
            raise Refused(Refusal(CloseCode.LIMIT_REACHED, 409, str(e))) from None
        try:
            self._ctx.sessions.admit(grant.instance_uuid, "serial", self,
                                     getattr(self._viewer, "listener", None))
        except Exception:
            self._place.leave()
            raise

    def start(self):
        if self._place is None or self._closed:
            return
        self._opened = True
        self._started_at = self._ctx.reactor.seconds()
        self._timer.start(self._grant.session_started_at)
        grant = self._grant
        audit("connect", console_type="serial", instance=grant.instance_uuid, peer=self._peer,
              grant_id=grant.id, caller=grant.caller,
              mode="interactive" if self.interactive else "read-only",
              resumed=grant.session_started_at is not None)
        self._place.open()

    def viewer_data(self, data):
        if self._place is not None and not self._closed:
            self._timer.activity()
            self._place.write(data)

    def viewer_lost(self, resumable=False):
        """
        The viewer went away: it closed, or (C{resumable}) its connection dropped without a
        close from the user.
        """
        self._end(None, "viewer dropped" if resumable else "viewer closed", resumable=resumable)

    # -- the registry's, the timers' and the hub's side --------------------------------------

    def close(self, code, detail=None):
        self._end(code, detail)

    # -- the hub's side: IHubSink -----------------------------------------------------------
    @property
    def network_transport(self):
        return self._viewer.network_transport

    def send(self, chunk):
        self._timer.activity()
        self._viewer.send_chunk(chunk)

    def pause_reading(self):
        self._viewer.pause_reading()

    def resume_reading(self):
        self._viewer.resume_reading()

    # -- ending --------------------------------------------------------------------------------

    def _end(self, code, detail, resumable=False):
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        place = self._place
        if place is not None:
            place.leave()
        reason = detail
        if code is not None:
            reason = reason_for(code, detail)
            self._viewer.close(code, reason)
        grant, ctx = self._grant, self._ctx
        ctx.sessions.release(grant.instance_uuid, "serial", self)
        ctx.tokens.release(grant, resumable and self._opened, self._timer.started_at)
        ctx.metrics.session_closed("serial", self.bytes_to_viewer, self.bytes_from_viewer)
        now = ctx.reactor.seconds()
        audit("close", console_type="serial", instance=grant.instance_uuid, peer=self._peer,
              grant_id=grant.id, caller=grant.caller,
              duration=now - (self._started_at or now), reason=reason,
              code=int(code) if code is not None else None,
              bytes_to_viewer=self.bytes_to_viewer, bytes_from_viewer=self.bytes_from_viewer,
              bytes_dropped=place.bytes_dropped if place is not None else 0)
