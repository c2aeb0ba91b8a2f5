"""
L{LibvirtConsole}: a domain's serial console through C{virDomainOpenConsole}, as an
L{IConsoleSource}.

This is how a service that is not root reads the console: libvirtd opens the PTY and relays it
over the libvirt connection as a stream. Threads, as in L{vncproxy.hypervisor.libvirt_adapter}::

    worker thread      newStream(NONBLOCK), openConsole(), eventAddCallback() (in the
                       adapter), and at the end eventRemoveCallback() + abort()
    libvirt event      _on_event(): recv() everything available into the inbox, send() the
    loop thread        outbox; never blocks (non-blocking stream; the remote driver queues sends)
    reactor thread     _flush() hands the inbox to on_data; write() fills the outbox and asks
                       for WRITABLE events; close()

The first output after a quiet spell wakes the reactor at once (callFromThread), so an echoed
keystroke is not delayed; while output keeps coming the reactor collects it every
L{POLL_INTERVAL} instead, and the event thread does not wake it again until a collection finds
the inbox empty. (libvirt's own per-message cost, ~7% of a core at the UART's full speed on the
testbed, does not depend on this and cannot be batched away: reading fewer, larger chunks was
measured to cost the same.)

The inbox and outbox are guarded by one lock; changes of the event mask happen under it too, so
that "outbox not empty" and "WRITABLE requested" never disagree. Output is never paused for a
consumer: the guest must not stall (libvirt's client buffers whatever the reactor has not taken
yet). Input is throttled: a registered producer is paused while more than L{HIGH_WATER} bytes
wait for the guest.

Measured with libvirt 9.0: a FORCE open by another client ends our stream with "stream had I/O
failure" (recv raises); a destroyed domain ends it with EOF (recv returns b""); abort() returns
in under a millisecond in every state.
"""

import threading

import libvirt
from twisted.logger import Logger
from zope.interface import implementer

from vncproxy.interfaces import IConsoleSource

_READ_EVENTS = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                | libvirt.VIR_STREAM_EVENT_HANGUP)
_WRITE_EVENTS = _READ_EVENTS | libvirt.VIR_STREAM_EVENT_WRITABLE

#: Bytes waiting for the guest above which the input producer is paused (resumed below a quarter).
HIGH_WATER = 64 * 1024
#: While output keeps coming, the reactor collects it this often instead of being woken for every
#: message (the UART delivers a few bytes per message: ~800 messages/s at full speed).
POLL_INTERVAL = 0.02
_RECV_SIZE = 64 * 1024


@implementer(IConsoleSource)
class LibvirtConsole:
    """
    @param reactor: the reactor (L{IReactorThreads} for C{callFromThread}).
    @param stream: a non-blocking C{virStream} on which C{openConsole} succeeded.
    @param on_data: called with output on the reactor thread.
    @param on_closed: called once with a reason when the stream ends by itself.
    @param run_blocking: C{run_blocking(f)} runs C{f()} off the reactor thread (the adapter's
        worker thread); used for C{abort()}.
    """

    _log = Logger()

    def __init__(self, reactor, stream, on_data, on_closed, run_blocking):
        self._reactor = reactor
        self._stream = stream
        self._on_data = on_data
        self._on_closed = on_closed
        self._run_blocking = run_blocking
        self._lock = threading.Lock()
        # guarded by _lock:
        self._inbox = []
        self._outbox = bytearray()
        self._flush_scheduled = False
        self._ended = None  # why the stream ended (event thread), or None
        self._writable_requested = False
        self._callback_registered = False
        # reactor thread only:
        self._closed = False
        self._reported = False
        self._producer = None
        self._producer_paused = False

    def __repr__(self):
        return "<LibvirtConsole>"

    def start(self):
        """
        Start receiving (register the stream callback). Call once, right after C{openConsole}.
        """
        with self._lock:
            self._stream.eventAddCallback(_READ_EVENTS, self._on_event, None)
            self._callback_registered = True

    # -- libvirt event loop thread ----------------------------------------------------------

    def _on_event(self, stream, events, opaque):
        try:
            self._receive()
            if events & libvirt.VIR_STREAM_EVENT_WRITABLE:
                self._send()
        except libvirt.libvirtError as e:
            self._end(e.get_error_message() or str(e))
        except Exception as e:  # never let an exception escape into libvirt's loop
            self._log.failure("serial console stream callback failed")
            self._end(f"internal error: {type(e).__name__}")

    def _receive(self):
        while True:
            with self._lock:
                if self._ended is not None:
                    return
            data = self._stream.recv(_RECV_SIZE)
            if data == -2:
                return
            if not data:
                self._end("console closed")
                return
            with self._lock:
                self._inbox.append(data)
                schedule = not self._flush_scheduled
                self._flush_scheduled = True
            if schedule:
                self._reactor.callFromThread(self._flush)

    def _send(self):
        with self._lock:
            while self._outbox and self._ended is None:
                sent = self._stream.send(bytes(self._outbox[:_RECV_SIZE]))
                if sent == -2:
                    break
                del self._outbox[:sent]
            if not self._outbox and self._writable_requested and self._ended is None:
                self._stream.eventUpdateCallback(_READ_EVENTS)
                self._writable_requested = False
            drained = len(self._outbox) <= HIGH_WATER // 4
        if drained:
            self._reactor.callFromThread(self._input_drained)

    def _end(self, reason):
        with self._lock:
            if self._ended is not None:
                return
            self._ended = reason
            self._outbox.clear()
            if self._callback_registered:
                self._callback_registered = False
                try:
                    self._stream.eventRemoveCallback()
                except libvirt.libvirtError:
                    pass
        self._reactor.callFromThread(self._flush)

    def connection_lost(self, reason):
        """
        The libvirt connection the stream belongs to is gone (libvirtd stopped or restarted):
        end the stream with C{reason}. libvirt does not always report that on the stream itself
        (measured with libvirt 9.0: a stream of a connection closed by a libvirtd restart got no
        event at all). Any thread.
        """
        self._end(reason)

    # -- reactor thread ---------------------------------------------------------------------

    def _flush(self):
        with self._lock:
            chunks, self._inbox = self._inbox, []
            ended = self._ended
            # Busy: collect again soon and stay "scheduled" so that the event thread does not
            # wake us meanwhile. Idle (or over): the next output wakes us.
            busy = bool(chunks) and ended is None and not self._closed
            self._flush_scheduled = busy
        if busy:
            self._reactor.callLater(POLL_INTERVAL, self._flush)
        if self._closed:
            return
        if chunks:
            self._on_data(b"".join(chunks))
        if ended is not None and not self._reported and not self._closed:
            self._reported = True
            self._release()
            self._on_closed(ended)

    def _input_drained(self):
        if self._producer is not None and self._producer_paused:
            self._producer_paused = False
            self._producer.resumeProducing()

    def write(self, data):
        if self._closed or not data:
            return
        with self._lock:
            if self._ended is not None:
                return
            self._outbox += data
            if not self._writable_requested:
                try:
                    self._stream.eventUpdateCallback(_WRITE_EVENTS)
                except libvirt.libvirtError:
                    return  # the stream is ending; _end() reports it
                self._writable_requested = True
            full = len(self._outbox) > HIGH_WATER
        if full and self._producer is not None and not self._producer_paused:
            self._producer_paused = True
            self._producer.pauseProducing()

    def registerProducer(self, producer, streaming):
        if not streaming:
            raise ValueError("LibvirtConsole only throttles streaming producers")
        if self._producer is not None:
            raise RuntimeError("a producer is already registered")
        self._producer = producer
        self._producer_paused = False

    def unregisterProducer(self):
        self._producer = None
        self._producer_paused = False

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._producer = None
        self._release()

    def _release(self):
        """
        Unregister the callback and abort the stream, on the worker thread.
        """
        stream = self._stream

        def release():
            with self._lock:
                registered, self._callback_registered = self._callback_registered, False
                if self._ended is None:
                    self._ended = "closed by us"
            if registered:
                try:
                    stream.eventRemoveCallback()
                except libvirt.libvirtError:
                    pass
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass  # already failed or finished: nothing to release

        d = self._run_blocking(release)
        if d is not None:
            d.addErrback(lambda f: self._log.failure("releasing a console stream failed", f))
