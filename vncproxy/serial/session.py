"""
L{SerialSession}: one WebSocket viewer of an instance's serial hub.

::

    onConnect   admit(): join the hub (HubBusy / HubFull / SerialUnavailable -> HTTP 409;
                a forced token closes the current writer with TAKEN_OVER), register with the
                session registry (so power-off and service stop close it too)
    onOpen      start(): the hub sends the scrollback, then live output
    onMessage   viewer_data(): the writer's input goes to the console, a read-only viewer's
                is dropped (binary frames, and text frames as their UTF-8 bytes)
    onClose     viewer_lost()
    close()     from the registry or the hub (taken over, too slow, stopped): close frame
                with the code and reason

The viewer adapter is the WebSocket side: C{send_chunk(chunk)}, C{close(code, reason)},
C{pause_reading()}, C{resume_reading()}, C{network_transport}.
"""

from twisted.logger import Logger

from vncproxy.closecodes import reason_for
from vncproxy.serial.hub import HubBusy, HubFull
from vncproxy.serial.manager import SerialUnavailable


class SerialRefused(Exception):
    """
    The viewer cannot attach; C{message} is safe to show.
    """

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class SerialSession:
    """
    @param ctx: the L{vncproxy.context.ProxyContext} (its C{serial} is the L{SerialManager}).
    @param grant: the L{vncproxy.tokens.Grant} (C{force}, C{read_only}).
    @param viewer: the WebSocket viewer adapter.
    @param peer: the viewer's address, for logs.
    """

    _log = Logger()

    def __init__(self, ctx, grant, viewer, peer):
        self._ctx = ctx
        self._grant = grant
        self._ws = viewer
        self._peer = peer
        self._place = None
        self._closed = False
        self._started_at = ctx.reactor.seconds()

    @property
    def interactive(self):
        return not self._grant.read_only

    # -- the WebSocket's side ----------------------------------------------------------------

    def admit(self):
        """
        @raise SerialRefused: 409 when the console is busy, full or not available.
        """
        grant, manager = self._grant, self._ctx.serial
        if manager is None:
            raise SerialRefused(501, "serial consoles are not enabled")
        try:
            self._place = manager.attach(grant.instance_uuid, self, self.interactive,
                                         force=grant.force)
        except SerialUnavailable as e:
            raise SerialRefused(409, str(e)) from None
        except HubBusy:
            raise SerialRefused(409, "serial console in use") from None
        except HubFull as e:
            raise SerialRefused(409, str(e)) from None
        try:
            self._ctx.sessions.admit(grant.instance_uuid, "serial", self)
        except Exception:
            self._place.leave()
            raise
        self._log.info(
            "serial session {grant_id} for {instance} from {peer} attached ({mode})",
            grant_id=grant.id, instance=grant.instance_uuid, peer=self._peer,
            mode="interactive" if self.interactive else "read-only", event="connect")

    def start(self):
        if self._place is not None and not self._closed:
            self._place.open()

    def viewer_data(self, data):
        if self._place is not None and not self._closed:
            self._place.write(data)

    def viewer_lost(self):
        self._end(None, "viewer disconnected")

    # -- the registry's and the hub's side --------------------------------------------------

    def close(self, code, detail=None):
        self._end(code, detail)

    # hub sink
    @property
    def network_transport(self):
        return self._ws.network_transport

    def send(self, chunk):
        self._ws.send_chunk(chunk)

    def pause_reading(self):
        self._ws.pause_reading()

    def resume_reading(self):
        self._ws.resume_reading()

    # -- ending --------------------------------------------------------------------------------

    def _end(self, code, detail):
        if self._closed:
            return
        self._closed = True
        place = self._place
        if place is not None:
            place.leave()
        reason = detail
        if code is not None:
            reason = reason_for(code, detail)
            self._ws.close(code, reason)
        grant = self._grant
        self._ctx.sessions.release(grant.instance_uuid, "serial", self)
        duration = self._ctx.reactor.seconds() - self._started_at
        self._log.info(
            "serial session {grant_id} for {instance} closed after {duration:.1f}s: {reason} "
            "({bytes_to_viewer} bytes to viewer, {bytes_from_viewer} typed, {bytes_dropped} "
            "dropped)",
            grant_id=grant.id, instance=grant.instance_uuid, duration=duration, reason=reason,
            code=int(code) if code is not None else None,
            bytes_to_viewer=place.bytes_sent if place else 0,
            bytes_from_viewer=place.bytes_typed if place else 0,
            bytes_dropped=place.bytes_dropped if place else 0, event="close")
