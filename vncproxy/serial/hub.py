"""
L{SerialHub}: one instance's serial console shared by many viewers.

::

    source (IConsoleSource) --data--> hub --> ConsoleLog (every byte, always)
          ^                            |----> scrollback ring (last N bytes)
          |                            '----> viewer 1 queue -> sink 1 (WebSocket)
          '------- input <-- writer         viewer 2 queue -> sink 2 ...

Rules:

 - The source is never paused for a viewer: the guest must not stall and the log must stay
   complete. Each viewer has its own queue, used only while its transport pushes back (its
   buffer is full and it paused us as its producer). A viewer more than C{queue_limit} bytes
   behind has C{grace} seconds to catch up; one more than twice that behind, or still behind
   after the grace, is disconnected with L{CloseCode.SLOW_VIEWER}. The others never notice.
 - At most one viewer is interactive (the writer); its input goes to the source, everyone
   else's is dropped (read-only viewers; this also keeps their terminals' answers to the
   guest's cursor-position requests off the console). A new interactive viewer is refused
   (L{HubBusy}) unless it forces its way in, which closes the current writer with
   L{CloseCode.TAKEN_OVER}.
 - A viewer first receives the scrollback (the last C{scrollback} bytes, cut at a line start
   when it was truncated), then live output, with nothing lost or repeated in between.
 - The source may come and go (the domain restarts, the console is reopened); viewers stay.
   While the guest-bound buffer of the source is full, the writer's transport is paused.

The hub owns the source, the batching of its output, the scrollback, who may join and who
writes. Each viewer's queue, its flow control and the slow-viewer timer are its L{Viewer}'s
(L{vncproxy.serial.viewer}). A viewer's sink (what the hub delivers to: a serial session, a
console-log follower) is an L{vncproxy.interfaces.IHubSink}.
"""

from collections import deque

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from vncproxy.closecodes import CloseCode
from vncproxy.serial.viewer import Chunk, Viewer

#: How far into a truncated scrollback to look for a line start.
_LINE_SEARCH = 4096


class HubBusy(Exception):
    """
    An interactive viewer is attached and the newcomer did not ask to take over.
    """


class HubFull(Exception):
    """
    The instance has as many viewers as allowed.
    """


@implementer(IPushProducer)
class _InputThrottle:
    """
    Registered with the source as its input producer: pauses whichever viewer is the writer
    while the source's guest-bound buffer is full.
    """

    def __init__(self, hub):
        self._hub = hub
        self.paused = False

    def pauseProducing(self):
        self.paused = True
        if self._hub.writer is not None:
            self._hub.writer.sink.pause_reading()

    def resumeProducing(self):
        self.paused = False
        if self._hub.writer is not None:
            self._hub.writer.sink.resume_reading()

    def stopProducing(self):
        self.resumeProducing()


class SerialHub:
    """
    @param instance: the instance UUID (for logs).
    @param clock: an L{IReactorTime} (slow-viewer grace timers).
    @param log: a L{vncproxy.serial.capture.ConsoleLog}, or C{None} to keep no log.
    @param scrollback: bytes of recent output kept for new viewers (0: none).
    @param queue_limit: bytes a viewer may lag before its grace period starts (at least
        C{scrollback}).
    @param grace: seconds a viewer may stay over C{queue_limit}.
    @param max_viewers: most viewers at once, interactive and read-only together.
    @param batch_interval: seconds over which output arriving in quick succession is gathered
        into one log write and one frame per viewer (0: none).

    @ivar bytes_from_guest: output received from the source since the hub was made.
    """

    _log = Logger()

    def __init__(self, instance, clock, log=None, scrollback=64 * 1024,
                 queue_limit=1024 * 1024, grace=5.0, max_viewers=16, batch_interval=0.0):
        self.instance = instance
        self.clock = clock
        self.log = log
        self.scrollback = scrollback
        # A new viewer's scrollback must never count as lagging.
        self.queue_limit = max(queue_limit, scrollback)
        self.grace = grace
        self.max_viewers = max_viewers
        self.batch_interval = batch_interval
        self.bytes_from_guest = 0
        self.bytes_to_guest = 0
        self._viewers = []
        self._writer = None
        self._source = None
        self._throttle = _InputThrottle(self)
        self._ring = deque()
        self._ring_size = 0
        self._ring_truncated = False
        self._pending = []
        self._flush_call = None
        self._last_flush = None

    def __repr__(self):
        return f"<SerialHub {self.instance} viewers={len(self._viewers)}>"

    @property
    def writer(self):
        """
        The interactive L{Viewer}, or C{None}.
        """
        return self._writer

    @property
    def viewers(self):
        return list(self._viewers)

    @property
    def source(self):
        return self._source

    # -- the source ------------------------------------------------------------------------------

    def attach_source(self, source):
        """
        Take input from now on to C{source} (an L{IConsoleSource}); its output must be wired to
        L{source_data}. Replaces any previous source (without closing it).
        """
        self.detach_source()
        self._source = source
        self._throttle.paused = False
        source.registerProducer(self._throttle, True)

    def detach_source(self, source=None):
        """
        Forget the source (it ended or is being closed); input is dropped until another is
        attached. With C{source}, only if that is the current one.
        """
        current = self._source
        if current is None or (source is not None and source is not current):
            return
        self.flush()
        self._source = None
        try:
            current.unregisterProducer()
        except Exception:
            pass
        if self._throttle.paused:
            self._throttle.resumeProducing()

    def source_data(self, data):
        """
        Output from the guest: log it, remember it, send it to every viewer. Never raises (the
        source must keep reading whatever a viewer does).

        With a C{batch_interval}, output is passed on at once when the previous batch is at
        least that old (an echoed keystroke is never delayed), else gathered until it is: the
        guest's UART delivers a few bytes at a time, and one log write and one frame per viewer
        for each of them would cost far more than the bytes.
        """
        if not data:
            return
        self.bytes_from_guest += len(data)
        self._pending.append(data)
        if self._flush_call is not None:
            return
        now = self.clock.seconds()
        if self._last_flush is None or now - self._last_flush >= self.batch_interval:
            self.flush()
        else:
            self._flush_call = self.clock.callLater(
                self._last_flush + self.batch_interval - now, self.flush)

    def flush(self):
        """
        Pass on the output gathered so far (see L{source_data}).
        """
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending = []
        self._last_flush = self.clock.seconds()
        self._pass_on(data)

    def note(self, text):
        """
        Add a line of our own (a gap marker: capture stopped or resumed) to the output, after
        everything received so far: logged, kept in the scrollback and sent to every viewer like
        guest output, but not counted as output from the guest.

        @param text: the marker, as C{str} (lines separated by CR LF); framed by CR LF so that
            it stands on its own lines whatever the guest printed last.
        """
        self.flush()
        self._pass_on(f"\r\n{text}\r\n".encode("utf-8", "replace"))

    def _pass_on(self, data):
        if self.log is not None:
            self.log.write(data)
        chunk = Chunk(data)
        self._remember(chunk)
        for viewer in list(self._viewers):
            try:
                viewer._deliver(chunk)
            except Exception:
                self._log.failure("serial viewer of {instance} failed; dropping it",
                                  instance=self.instance)
                viewer.leave()

    # -- scrollback ----------------------------------------------------------------------------

    def _remember(self, chunk):
        if self.scrollback <= 0:
            return
        self._ring.append(chunk.data)
        self._ring_size += len(chunk)
        while self._ring and self._ring_size - len(self._ring[0]) >= self.scrollback:
            self._ring_size -= len(self._ring.popleft())
            self._ring_truncated = True

    def recent_output(self):
        """
        The scrollback a new viewer receives: at most C{scrollback} bytes, starting at a line
        start when older output was cut off (and a line start is near).
        """
        data = b"".join(self._ring)
        truncated = self._ring_truncated
        if len(data) > self.scrollback:
            data = data[-self.scrollback:]
            truncated = True
        if truncated:
            newline = data.find(b"\n", 0, _LINE_SEARCH)
            if newline >= 0:
                data = data[newline + 1:]
        return data

    def clear_scrollback(self):
        self._ring.clear()
        self._ring_size = 0
        self._ring_truncated = False

    # -- viewers ---------------------------------------------------------------------------------

    def check(self, interactive, force=False):
        """
        Whether a viewer could join now.

        @raise HubBusy: C{interactive} without C{force} while a writer is attached.
        @raise HubFull: at C{max_viewers} (a forced takeover replaces the writer, so it fits).
        """
        if interactive and self._writer is not None:
            if not force:
                raise HubBusy("an interactive serial session is active")
            return
        if len(self._viewers) >= self.max_viewers:
            raise HubFull(f"serial viewer limit reached ({self.max_viewers})")

    def join(self, sink, interactive=True, force=False, scrollback=True):
        """
        Add a viewer; it receives nothing before L{Viewer.open}, and then the scrollback first
        (unless not C{scrollback}: live output only). With C{interactive} and C{force}, the
        current writer is closed (TAKEN_OVER).

        @raise HubBusy: see L{check}.
        @raise HubFull: see L{check}.
        @return: its L{Viewer}.
        """
        self.check(interactive, force)
        viewer = Viewer(self, sink, interactive)
        if interactive and self._writer is not None:
            old = self._writer
            self._log.info("serial console of {instance} taken over by a forced session",
                           instance=self.instance)
            old.close(CloseCode.TAKEN_OVER, "another session took the console over")
        recent = self.recent_output() if scrollback else b""
        if recent:
            viewer._deliver(Chunk(recent))
        self._viewers.append(viewer)
        if interactive:
            self._writer = viewer
            if self._throttle.paused:
                sink.pause_reading()
        return viewer

    def close_viewers(self, code, detail=None):
        """
        Close every viewer (the instance stopped, the service stops), after the last output.
        """
        self.flush()
        for viewer in list(self._viewers):
            viewer.close(code, detail)

    def _forget(self, viewer):
        if viewer in self._viewers:
            self._viewers.remove(viewer)
        if self._writer is viewer:
            self._writer = None
            if self._throttle.paused:
                viewer.sink.resume_reading()

    def _too_slow(self, viewer, detail):
        self._log.info("serial viewer of {instance} disconnected: too slow ({detail})",
                       instance=self.instance, detail=detail)
        viewer.close(CloseCode.SLOW_VIEWER, detail)

    def _input(self, viewer, data):
        if viewer is not self._writer or viewer._gone or not data:
            viewer.bytes_dropped += len(data)
            return False
        if self._source is None:
            viewer.bytes_dropped += len(data)
            return False
        viewer.bytes_typed += len(data)
        self.bytes_to_guest += len(data)
        self._source.write(data)
        return True
