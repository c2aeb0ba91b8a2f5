"""
A serial viewer's own queue at the hub (L{vncproxy.serial.viewer.Viewer}): delivery paced by
its transport, the backlog coalesced on resume, and the slow-viewer rule (over the queue limit:
a grace period; twice over: closed at once), with a real PTY pair as the console where the
guest's output matters and a test clock.
"""

from tests.support import serialhub
from tests.support.ptypair import print_through
from tests.support.serialhub import console_fixture, pty_fixture, reactor_fixture  # noqa: F401
from vncproxy.closecodes import CloseCode
from vncproxy.serial.hub import SerialHub


def test_slow_viewer_is_dropped_after_the_grace(console, pty, reactor):
    """A viewer stuck over its queue limit (8 KB here) is closed with SLOW_VIEWER after the
    grace; the others and the log get every byte, before and after."""
    hub, source, log, _ = console
    stuck, fast = serialhub.Sink(serialhub.FakeTransport(limit=1024)), serialhub.Sink(serialhub.FakeTransport(limit=1 << 30))
    stuck_viewer = hub.join(stuck, interactive=False)
    stuck_viewer.open()
    stuck_viewer.pauseProducing()  # its transport's buffer is full already
    hub.join(fast, interactive=False).open()
    printed = b"".join(bytes([65 + i]) * 4000 for i in range(3))
    print_through(pty, source, printed)
    reactor.advance(4.9)
    assert stuck.closed is None  # over the limit, but within the grace period
    reactor.advance(0.1)
    assert stuck.closed[0] == CloseCode.SLOW_VIEWER
    assert "bytes behind after 5 s" in stuck.closed[1]
    print_through(pty, source, b"after")
    printed += b"after"
    assert bytes(fast.received) == printed
    assert log.tail() == printed
    assert [v.sink for v in hub.viewers] == [fast]


def test_slow_viewer_that_catches_up_in_time_stays(console, pty, reactor):
    """A viewer briefly over its limit that drains within the grace stays, and gets every byte
    in order (its queue is sent when its transport resumes)."""
    hub, source, _, _ = console
    transport = serialhub.FakeTransport(limit=1024)
    sink = serialhub.Sink(transport)
    hub.join(sink, interactive=False).open()
    printed = b"".join(bytes([97 + i % 26]) * 1000 for i in range(12))
    print_through(pty, source, printed)
    reactor.advance(4.0)
    transport.limit = 1 << 30
    transport.drain()
    reactor.advance(10.0)
    assert sink.closed is None
    assert bytes(sink.received) == printed


def test_viewer_twice_over_the_limit_is_dropped_at_once(reactor):
    """Lagging by more than twice the queue limit closes the viewer without waiting."""
    hub = SerialHub(serialhub.UUID, reactor, scrollback=0, queue_limit=4096, grace=5.0)
    transport = serialhub.FakeTransport(limit=0)
    sink = serialhub.Sink(transport)
    hub.join(sink).open()
    for _ in range(3):
        hub.source_data(b"z" * 4000)
    assert sink.closed is None
    hub.source_data(b"z" * 4000)
    assert sink.closed[0] == CloseCode.SLOW_VIEWER
    assert hub.writer is None


def test_queue_is_sent_in_batches_on_resume(reactor):
    """A resumed viewer gets its backlog coalesced into few large chunks, in order."""
    hub = SerialHub(serialhub.UUID, reactor, scrollback=0, queue_limit=1 << 20)
    transport = serialhub.FakeTransport(limit=10)
    sink = serialhub.Sink(transport)
    hub.join(sink).open()
    expected = b""
    for i in range(1000):
        data = b"%d," % i
        expected += data
        hub.source_data(data)
    transport.limit = 1 << 30
    transport.drain()
    assert bytes(sink.received) == expected
    assert len(sink.chunks) < 10
