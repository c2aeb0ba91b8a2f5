"""
L{Viewer}: one viewer's place at a L{vncproxy.serial.hub.SerialHub}: its own queue of output,
delivery at the pace its transport allows, and the slow-viewer rule.

Each viewer is the push producer registered with its sink's C{network_transport}, so a full
transport buffer pauses delivery to that viewer only; what arrives meanwhile waits in its queue
(coalesced into chunks of at most 64 KiB when it resumes). A viewer more than the hub's
C{queue_limit} bytes behind has the hub's C{grace} seconds to catch up; one more than twice that
behind, or still behind after the grace, is reported to the hub as too slow.

A sink (the viewer's side of the hub) is an L{vncproxy.interfaces.IHubSink}.
"""

from collections import deque

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

#: Largest chunk made when a lagging viewer's queue is coalesced on resume.
_BATCH = 64 * 1024


class Chunk:
    """
    A piece of console output on its way to every viewer.

    @ivar data: the bytes.
    @ivar cache: free for sinks to keep an encoded form shared by all of them (a WebSocket
        frame made once for N viewers).
    """

    __slots__ = ("data", "cache")

    def __init__(self, data):
        self.data = bytes(data)
        self.cache = None

    def __len__(self):
        return len(self.data)


@implementer(IPushProducer)
class Viewer:
    """
    One viewer's place at the hub, returned by
    L{SerialHub.join<vncproxy.serial.hub.SerialHub.join>}. Also the producer registered with the
    viewer's transport, so that a full transport buffer pauses delivery to this viewer only.

    @ivar interactive: whether this viewer is the writer (or was, before a takeover).
    """

    def __init__(self, hub, sink, interactive):
        self.hub = hub
        self.sink = sink
        self.interactive = interactive
        self.bytes_sent = 0
        self.bytes_typed = 0
        self.bytes_dropped = 0
        self._queue = deque()
        self._queued = 0
        self._opened = False
        self._paused = False
        self._gone = False
        self._grace_call = None
        self._transport = None

    def __repr__(self):
        kind = "writer" if self.is_writer else "viewer"
        return f"<Viewer {kind} of {self.hub.instance} queued={self._queued}>"

    @property
    def is_writer(self):
        return self.hub.writer is self

    @property
    def queued(self):
        """
        Bytes waiting for this viewer.
        """
        return self._queued

    # -- the sink's side -----------------------------------------------------------------------

    def open(self):
        """
        Start delivering: the scrollback and whatever came since
        L{SerialHub.join<vncproxy.serial.hub.SerialHub.join>}, then live output.
        """
        if self._gone or self._opened:
            return
        self._opened = True
        transport = getattr(self.sink, "network_transport", None)
        if transport is not None:
            transport.registerProducer(self, True)
            self._transport = transport
        self._drain()

    def write(self, data):
        """
        Input from this viewer: sent to the guest if it is the writer, dropped otherwise.

        @return: whether the bytes went to the console.
        """
        return self.hub._input(self, data)

    def leave(self):
        """
        The viewer went away (or is being closed by its sink): forget it. Idempotent.
        """
        if self._gone:
            return
        self._gone = True
        self._cancel_grace()
        self._queue.clear()
        self._queued = 0
        transport, self._transport = self._transport, None
        if transport is not None and getattr(transport, "producer", None) is self:
            transport.unregisterProducer()
        self.hub._forget(self)

    def close(self, code, detail=None):
        """
        End this viewer from the hub's side: forget it, then tell its sink.
        """
        if self._gone:
            return
        self.leave()
        self.sink.close(code, detail)

    # -- IPushProducer (called by the viewer's transport) --------------------------------------

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._drain()

    def stopProducing(self):
        # The transport is gone; the sink reports that through leave().
        self._paused = True

    # -- delivery ------------------------------------------------------------------------------

    def _deliver(self, chunk):
        if self._gone:
            return
        if self._opened and not self._paused and not self._queue:
            self._send(chunk)
            return
        self._queue.append(chunk)
        self._queued += len(chunk)
        self._check_lag()

    def _send(self, chunk):
        self.bytes_sent += len(chunk)
        self.sink.send(chunk)

    def _drain(self):
        while self._queue and self._opened and not self._paused and not self._gone:
            chunk = self._queue.popleft()
            if self._queue and len(chunk) < _BATCH:
                parts, size = [chunk.data], len(chunk)
                while self._queue and size + len(self._queue[0]) <= _BATCH:
                    part = self._queue.popleft().data
                    parts.append(part)
                    size += len(part)
                self._queued -= size
                chunk = Chunk(b"".join(parts))
            else:
                self._queued -= len(chunk)
            self._send(chunk)
        self._check_lag()

    def _check_lag(self):
        if self._gone:
            return
        limit = self.hub.queue_limit
        if self._queued > 2 * limit:
            self.hub._too_slow(self, f"{self._queued} bytes behind")
        elif self._queued > limit:
            if self._grace_call is None:
                self._grace_call = self.hub.clock.callLater(self.hub.grace, self._grace_over)
        else:
            self._cancel_grace()

    def _grace_over(self):
        self._grace_call = None
        if not self._gone and self._queued > self.hub.queue_limit:
            self.hub._too_slow(self, f"still {self._queued} bytes behind after "
                                     f"{self.hub.grace:g} s")

    def _cancel_grace(self):
        if self._grace_call is not None and self._grace_call.active():
            self._grace_call.cancel()
        self._grace_call = None
