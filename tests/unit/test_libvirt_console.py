"""
LibvirtConsole against a scripted virStream: batching of output toward the reactor, EOF and
I/O errors (what a destroyed domain and a forced takeover look like), ordered input through
WRITABLE events, input throttling, and close(). The real stream is exercised end to end
against QEMU (tests/e2e/test_serial_e2e.py).
"""

import libvirt
import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from vncproxy.hypervisor.libvirt_console import HIGH_WATER, POLL_INTERVAL, LibvirtConsole

R = libvirt.VIR_STREAM_EVENT_READABLE
W = libvirt.VIR_STREAM_EVENT_WRITABLE
READ_MASK = R | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP


class FakeStream:
    def __init__(self):
        self.incoming = []  # what recv() returns next: bytes, -2, b"" or an exception
        self.sent = []
        self.send_results = []  # forced send() results (-2), else everything is taken
        self.mask = None
        self.callback = None
        self.removed = 0
        self.aborted = 0

    def eventAddCallback(self, events, cb, opaque):
        self.mask, self.callback = events, cb

    def eventUpdateCallback(self, events):
        if self.callback is None:
            raise libvirt.libvirtError("no callback")
        self.mask = events

    def eventRemoveCallback(self):
        self.callback = None
        self.removed += 1

    def abort(self):
        self.aborted += 1

    def recv(self, n):
        if not self.incoming:
            return -2
        item = self.incoming.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def send(self, data):
        if self.send_results:
            result = self.send_results.pop(0)
            if result == -2:
                return -2
            data = data[:result]
        self.sent.append(bytes(data))
        return len(data)

    def fire(self, events):
        """What libvirt's event loop thread does."""
        self.callback(self, events, None)


class Reactor(Clock):
    """callFromThread queues; run() plays the reactor thread; callLater on a test clock."""

    def __init__(self):
        super().__init__()
        self.from_threads = []

    def callFromThread(self, f, *args):
        self.from_threads.append((f, args))

    def run(self):
        while self.from_threads:
            f, args = self.from_threads.pop(0)
            f(*args)


class Producer:
    def __init__(self):
        self.events = []

    def pauseProducing(self):
        self.events.append("pause")

    def resumeProducing(self):
        self.events.append("resume")

    def stopProducing(self):
        self.events.append("stop")


@pytest.fixture
def parts():
    stream, reactor, data, closed = FakeStream(), Reactor(), [], []
    console = LibvirtConsole(reactor, stream, data.append, closed.append,
                             lambda f: defer.succeed(f()))
    console.start()
    return console, stream, reactor, data, closed


def test_output_is_delivered_in_one_batch_per_reactor_turn(parts):
    """Everything recv() returns during one event reaches on_data as one call, in order."""
    console, stream, reactor, data, closed = parts
    assert stream.mask == READ_MASK
    stream.incoming = [b"Linux ", b"version", -2]
    stream.fire(R)
    stream.incoming = [b" 6.1\r\n"]
    stream.fire(R)
    assert len(reactor.from_threads) == 1  # one flush scheduled for both events
    reactor.run()
    assert data == [b"Linux version 6.1\r\n"] and closed == []


def test_busy_output_is_collected_by_polling_not_by_waking_the_reactor(parts):
    """After the first wake-up, output that keeps coming is collected every POLL_INTERVAL
    without further cross-thread calls; once a collection finds nothing, the next output wakes
    the reactor at once again."""
    console, stream, reactor, data, closed = parts
    stream.incoming = [b"1\r\n"]
    stream.fire(R)
    reactor.run()
    for n in range(2, 6):
        stream.incoming = [b"%d\r\n" % n]
        stream.fire(R)
    assert reactor.from_threads == []  # no wake-ups while busy
    reactor.advance(POLL_INTERVAL)
    assert data == [b"1\r\n", b"2\r\n3\r\n4\r\n5\r\n"]
    reactor.advance(POLL_INTERVAL)  # nothing came: idle again
    stream.incoming = [b"6\r\n"]
    stream.fire(R)
    assert len(reactor.from_threads) == 1
    reactor.run()
    assert data[-1] == b"6\r\n"


def test_eof_ends_the_console_once(parts):
    """EOF (the domain was destroyed) delivers what came before, then on_closed once, and the
    stream is released (callback removed, aborted)."""
    console, stream, reactor, data, closed = parts
    stream.incoming = [b"reboot: Power down\r\n", b""]
    stream.fire(R | libvirt.VIR_STREAM_EVENT_HANGUP)
    assert stream.callback is None  # no more events after the end
    reactor.run()
    assert data == [b"reboot: Power down\r\n"]
    assert closed == ["console closed"]
    assert stream.removed == 1 and stream.aborted == 1


def test_io_failure_ends_the_console_with_its_message(parts):
    """A takeover by another client (recv raises "stream had I/O failure") ends the console."""
    console, stream, reactor, data, closed = parts
    stream.incoming = [libvirt.libvirtError("stream had I/O failure")]
    stream.fire(R | libvirt.VIR_STREAM_EVENT_ERROR)
    reactor.run()
    assert closed == ["stream had I/O failure"]


def test_unexpected_exception_never_escapes_into_libvirt(parts):
    """A bug in the callback ends the console instead of raising into libvirt's event loop."""
    console, stream, reactor, data, closed = parts
    stream.incoming = [ValueError("bug")]
    stream.fire(R)
    reactor.run()
    assert closed == ["internal error: ValueError"]


def test_input_goes_out_in_order_on_writable_events(parts):
    """write() asks for WRITABLE; the event sends everything in order, then stops asking."""
    console, stream, reactor, data, closed = parts
    console.write(b"echo ")
    assert stream.mask == READ_MASK | W
    console.write(b"hi\r")
    stream.fire(W)
    assert b"".join(stream.sent) == b"echo hi\r"
    assert stream.mask == READ_MASK


def test_input_waits_when_the_stream_would_block(parts):
    """A send() that would block keeps the bytes for the next WRITABLE event."""
    console, stream, reactor, data, closed = parts
    stream.send_results = [-2]
    console.write(b"abc")
    stream.fire(W)
    assert stream.sent == [] and stream.mask == READ_MASK | W
    stream.send_results = [1]
    stream.fire(W)
    stream.fire(W)
    assert b"".join(stream.sent) == b"abc" and stream.mask == READ_MASK


def test_full_input_buffer_pauses_the_producer_until_drained(parts):
    """More than HIGH_WATER bytes waiting pauses the registered producer; draining resumes it."""
    console, stream, reactor, data, closed = parts
    producer = Producer()
    console.registerProducer(producer, True)
    console.write(b"x" * (HIGH_WATER + 1))
    assert producer.events == ["pause"]
    stream.fire(W)
    reactor.run()
    assert producer.events == ["pause", "resume"]
    assert sum(map(len, stream.sent)) == HIGH_WATER + 1


def test_close_is_silent_and_releases_the_stream(parts):
    """close() aborts the stream; nothing is delivered or reported afterwards."""
    console, stream, reactor, data, closed = parts
    stream.incoming = [b"late output"]
    stream.fire(R)
    console.close()
    console.close()
    reactor.run()
    assert data == [] and closed == []
    assert stream.aborted == 1 and stream.removed == 1
    console.write(b"ignored")
    assert stream.sent == []


def test_write_after_the_end_is_dropped(parts):
    """Input after the stream ended goes nowhere and raises nothing."""
    console, stream, reactor, data, closed = parts
    stream.incoming = [b""]
    stream.fire(R)
    console.write(b"too late")
    reactor.run()
    assert stream.sent == [] and closed == ["console closed"]


def test_connection_lost_ends_the_console_once(parts):
    """When the adapter reports the libvirt connection gone (a restart of libvirtd sends the
    stream no event), output received before is delivered, then on_closed once, and later
    stream events are ignored."""
    console, stream, reactor, data, closed = parts
    stream.incoming = [b"tick-5\r\n"]
    callback = stream.callback
    stream.fire(R)
    console.connection_lost("libvirt connection closed")
    console.connection_lost("libvirt connection closed")
    assert stream.callback is None
    callback(stream, R, None)  # a late event from libvirt's loop
    reactor.run()
    assert data == [b"tick-5\r\n"]
    assert closed == ["libvirt connection closed"]
