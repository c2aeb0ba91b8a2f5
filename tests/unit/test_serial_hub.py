"""
SerialHub with a real PTY pair (os.openpty) as the console and a test clock: capture, fan-out,
scrollback, one writer with forced takeover, read-only viewers, a stuck viewer that never
stalls the guest, input throttling (each viewer's own queue and the slow-viewer rule:
test_serial_viewer.py).

Nothing here runs a reactor: the PTY is read with select() + doRead() (tests/support/ptypair),
the hub's timers run on MemoryReactorClock.
"""

import os

import pytest
from twisted.python.failure import Failure

from tests.support.ptypair import PtyPair, print_through, pump
from tests.support.serialhub import (  # noqa: F401 (fixtures: reactor, pty, console)
    UUID,
    FakeTransport,
    Sink,
    console_fixture,
    pty_fixture,
    reactor_fixture,
)
from vncproxy.closecodes import CloseCode
from vncproxy.serial.capture import ConsoleLog
from vncproxy.serial.hub import HubBusy, HubFull, SerialHub
from vncproxy.serial.pty import PtySource


def test_output_reaches_every_viewer_and_the_log(console, pty):
    """What the guest prints reaches the log and every open viewer, byte for byte, in order."""
    hub, source, log, _ = console
    a, b = Sink(), Sink()
    hub.join(a, interactive=False).open()
    hub.join(b, interactive=False).open()
    pty.guest_prints(b"Linux version 6.1\r\n[guest /]# ")
    pump(source)
    assert bytes(a.received) == bytes(b.received) == b"Linux version 6.1\r\n[guest /]# "
    assert log.tail() == b"Linux version 6.1\r\n[guest /]# "
    assert hub.bytes_from_guest == len(a.received)


def test_output_is_captured_with_nobody_attached(console, pty):
    """With no viewer at all the PTY is still read and everything lands in the log."""
    hub, source, log, _ = console
    boot = b"".join(b"[ %4d.000000] boot line\r\n" % i for i in range(2000))  # ~60 KB
    print_through(pty, source, boot)
    assert log.tail() == boot


def test_a_frame_is_made_once_for_all_viewers(console, pty):
    """Every viewer gets the same Chunk object, so an encoded frame can be shared."""
    hub, source, _, _ = console
    a, b = Sink(), Sink()
    hub.join(a, interactive=False).open()
    hub.join(b, interactive=False).open()
    pty.guest_prints(b"x")
    pump(source)
    assert a.chunks[0] is b.chunks[0]


def test_attach_sends_scrollback_first_then_live_output(console, pty):
    """A new viewer gets recent output first, then what follows, with nothing lost or repeated."""
    hub, source, _, _ = console
    pty.guest_prints(b"[guest /]# ")
    pump(source)
    sink = Sink()
    viewer = hub.join(sink)
    # Output between join (onConnect) and open (onOpen) is kept for the viewer.
    pty.guest_prints(b"ls\r\n")
    pump(source)
    assert sink.received == b""
    viewer.open()
    pty.guest_prints(b"bin etc\r\n")
    pump(source)
    assert bytes(sink.received) == b"[guest /]# ls\r\nbin etc\r\n"


def test_scrollback_is_bounded_and_starts_at_a_line(console, pty):
    """Scrollback keeps at most its size, cut after a newline when older output was dropped."""
    hub, source, _, _ = console
    lines = b"".join(b"line %04d of the boot log\r\n" % i for i in range(200))
    pty.guest_prints(lines)
    pump(source)
    recent = hub.recent_output()
    assert len(recent) <= hub.scrollback
    assert lines.endswith(recent)
    assert recent.startswith(b"line ")
    sink = Sink()
    hub.join(sink, interactive=False).open()
    assert bytes(sink.received) == recent


def test_no_scrollback_when_configured_off(reactor):
    """scrollback = 0 sends a new viewer only live output."""
    hub = SerialHub(UUID, reactor, scrollback=0)
    hub.source_data(b"before")
    sink = Sink()
    hub.join(sink).open()
    hub.source_data(b"after")
    assert bytes(sink.received) == b"after"


def test_writer_types_into_the_guest(console, pty):
    """The interactive viewer's input reaches the guest side of the PTY unchanged."""
    hub, source, _, _ = console
    writer = hub.join(Sink())
    writer.open()
    assert writer.write(b"echo hello\r") is True
    pump(source)
    assert pty.typed(expect=11) == b"echo hello\r"
    assert hub.bytes_to_guest == 11


def test_read_only_viewer_cannot_type(console, pty):
    """Input from a read-only viewer is dropped; the writer's still goes through."""
    hub, source, _, _ = console
    watcher = hub.join(Sink(), interactive=False)
    writer = hub.join(Sink())
    watcher.open()
    writer.open()
    assert watcher.write(b"\x1b[24;80R") is False
    assert writer.write(b"id\r") is True
    pump(source)
    assert pty.typed(expect=3) == b"id\r"
    assert watcher.bytes_dropped == 8


def test_second_interactive_viewer_is_refused_without_force(reactor):
    """A second interactive viewer gets HubBusy; read-only viewers are still welcome."""
    hub = SerialHub(UUID, reactor)
    first = hub.join(Sink())
    with pytest.raises(HubBusy):
        hub.join(Sink())
    hub.join(Sink(), interactive=False)
    assert hub.writer is first


def test_force_takes_over_and_closes_the_writer_with_a_reason(console, pty):
    """A forced interactive viewer closes the writer with TAKEN_OVER and types from then on."""
    hub, source, _, _ = console
    old_sink, new_sink = Sink(), Sink()
    old = hub.join(old_sink)
    old.open()
    new = hub.join(new_sink, force=True)
    new.open()
    assert old_sink.closed == (CloseCode.TAKEN_OVER, "another session took the console over")
    assert hub.writer is new and old not in hub.viewers
    assert old.write(b"stale\r") is False
    assert new.write(b"fresh\r") is True
    pump(source)
    assert pty.typed(expect=6) == b"fresh\r"


def test_viewer_limit(reactor):
    """max_viewers counts every viewer; a forced takeover still fits because it replaces one."""
    hub = SerialHub(UUID, reactor, max_viewers=2)
    hub.join(Sink())
    hub.join(Sink(), interactive=False)
    with pytest.raises(HubFull):
        hub.join(Sink(), interactive=False)
    with pytest.raises(HubBusy):
        hub.join(Sink())
    hub.join(Sink(), force=True)
    assert len(hub.viewers) == 2


def test_leaving_frees_the_writer_slot(reactor):
    """When the writer leaves, the next interactive viewer joins without force."""
    hub = SerialHub(UUID, reactor)
    hub.join(Sink()).leave()
    assert hub.writer is None
    hub.join(Sink())


def test_a_stuck_viewer_never_stalls_the_guest(reactor, pty, tmp_path):
    """With a viewer that takes nothing, the PTY is still read: 200 KB (ten times what stalls
    QEMU when its PTY holder stops reading) go through to the log."""
    log = ConsoleLog(str(tmp_path), UUID, 1 << 20, 2)
    hub = SerialHub(UUID, reactor, log=log, scrollback=1024, queue_limit=1 << 20)
    source = PtySource(reactor, pty.path, hub.source_data, lambda reason: None)
    hub.attach_source(source)
    stuck = Sink(FakeTransport(limit=0))
    hub.join(stuck, interactive=False).open()
    printed = os.urandom(200 * 1024)
    print_through(pty, source, printed)
    assert log.tail() == printed
    assert hub.viewers[0].queued > 190 * 1024
    source.close()


def test_source_may_go_and_come_back(console, pty, reactor):
    """When the source ends, viewers stay and input is dropped; a new source takes input again."""
    hub, source, _, ended = console
    sink = Sink()
    writer = hub.join(sink)
    writer.open()
    pty.hang_up()
    pump(source)
    assert ended == [f"serial PTY {pty.path} closed"]
    hub.detach_source(source)
    assert writer.write(b"lost\r") is False
    assert sink.closed is None
    second = PtyPair()
    try:
        new_source = PtySource(reactor, second.path, hub.source_data, ended.append)
        hub.attach_source(new_source)
        assert writer.write(b"again\r") is True
        second.guest_prints(b"again\r\n")
        pump(new_source)
        assert second.typed(expect=6) == b"again\r"
        assert bytes(sink.received).endswith(b"again\r\n")
        new_source.close()
    finally:
        second.close()


def test_full_console_input_pauses_the_writer_only(reactor):
    """While the source's input buffer is full the writer's transport is paused; a forced
    successor starts paused and the old writer is released."""
    hub = SerialHub(UUID, reactor)

    class Source:
        producer = None

        def registerProducer(self, producer, streaming):
            self.producer = producer

        def unregisterProducer(self):
            self.producer = None

        def write(self, data):
            pass

    source = Source()
    hub.attach_source(source)
    old_sink, watcher = Sink(), Sink()
    hub.join(old_sink)
    hub.join(watcher, interactive=False)
    source.producer.pauseProducing()
    assert old_sink.reading is False and watcher.reading is True
    new_sink = Sink()
    hub.join(new_sink, force=True)
    assert new_sink.reading is False and old_sink.reading is True
    source.producer.resumeProducing()
    assert new_sink.reading is True


def test_a_failing_viewer_does_not_stop_the_others(reactor):
    """A sink that raises is dropped; the source's data still reaches the rest."""
    hub = SerialHub(UUID, reactor)

    class Broken(Sink):
        def send(self, chunk):
            raise RuntimeError("boom")

    good = Sink()
    hub.join(Broken(), interactive=False).open()
    hub.join(good, interactive=False).open()
    hub.source_data(b"still here")
    assert bytes(good.received) == b"still here"
    assert len(hub.viewers) == 1


def test_close_viewers(reactor):
    """close_viewers closes everyone with the code and frees the writer slot."""
    hub = SerialHub(UUID, reactor)
    a, b = Sink(), Sink()
    hub.join(a)
    hub.join(b, interactive=False)
    hub.close_viewers(CloseCode.INSTANCE_STOPPED)
    assert a.closed == b.closed == (CloseCode.INSTANCE_STOPPED, None)
    assert hub.viewers == [] and hub.writer is None


def test_clear_scrollback(reactor):
    """After clear_scrollback a new viewer gets no old output."""
    hub = SerialHub(UUID, reactor)
    hub.source_data(b"secret printed on the console\r\n")
    hub.clear_scrollback()
    sink = Sink()
    hub.join(sink).open()
    assert sink.received == b""


# -- PtySource on its own -----------------------------------------------------------------------


def test_pty_source_reports_the_end_once(reactor, pty):
    """When QEMU closes its side, on_closed is called once and the descriptor is released."""
    got, ended = [], []
    source = PtySource(reactor, pty.path, got.append, ended.append)
    pty.guest_prints(b"bye\r\n")
    pump(source)
    pty.hang_up()
    pump(source)
    assert b"".join(got) == b"bye\r\n"
    assert ended == [f"serial PTY {pty.path} closed"]
    with pytest.raises(OSError):
        os.fstat(source.fileno())


def test_pty_source_close_is_silent_and_idempotent(reactor, pty):
    """close() releases the PTY without calling on_closed; a second close is harmless."""
    ended = []
    source = PtySource(reactor, pty.path, lambda data: None, ended.append)
    source.close()
    source.close()
    source.connectionLost(Failure(Exception("late")))
    assert ended == []
    assert source not in reactor.readers


def test_pty_source_never_stops_the_hub_producer(reactor, pty):
    """The PTY ending does not call stopProducing on the registered input producer."""
    calls = []

    class Producer:
        def pauseProducing(self):
            calls.append("pause")

        def resumeProducing(self):
            calls.append("resume")

        def stopProducing(self):
            calls.append("stop")

    source = PtySource(reactor, pty.path, lambda data: None, lambda reason: None)
    source.registerProducer(Producer(), True)
    pty.hang_up()
    pump(source)
    assert "stop" not in calls


def test_pty_source_refuses_what_it_cannot_open(reactor, tmp_path):
    """A missing path or a file that is not a terminal is ConsoleUnavailable, not a crash."""
    from vncproxy.hypervisor import ConsoleUnavailable

    with pytest.raises(ConsoleUnavailable, match="cannot open serial PTY"):
        PtySource(reactor, str(tmp_path / "missing"), None, None)
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    with pytest.raises(ConsoleUnavailable, match="is not a terminal"):
        PtySource(reactor, str(plain), None, None)


def test_output_in_quick_succession_is_batched(reactor, tmp_path):
    """With a batch interval, the first output after a quiet spell goes out at once (an echo is
    never delayed); what follows within the interval goes out as one chunk when it ends."""
    log = ConsoleLog(str(tmp_path), UUID, 1 << 20, 2)
    hub = SerialHub(UUID, reactor, log=log, batch_interval=0.02)
    sink = Sink()
    hub.join(sink).open()
    hub.source_data(b"e")
    assert [c.data for c in sink.chunks] == [b"e"]
    for part in (b"ch", b"o hi", b"\r\n"):
        hub.source_data(part)
    assert len(sink.chunks) == 1 and log.tail() == b"e"
    reactor.advance(0.02)
    assert [c.data for c in sink.chunks] == [b"e", b"cho hi\r\n"]
    assert log.tail() == b"echo hi\r\n"
    reactor.advance(1.0)
    hub.source_data(b"[guest /]# ")
    assert sink.chunks[-1].data == b"[guest /]# "


def test_pending_output_goes_out_before_viewers_are_closed(reactor):
    """Power-off closes viewers only after the last gathered output reached them."""
    hub = SerialHub(UUID, reactor, batch_interval=0.02)
    sink = Sink()
    hub.join(sink).open()
    hub.source_data(b"reboot: ")
    hub.source_data(b"Power down\r\n")
    hub.close_viewers(CloseCode.INSTANCE_STOPPED)
    assert bytes(sink.received) == b"reboot: Power down\r\n"
    assert sink.closed[0] == CloseCode.INSTANCE_STOPPED


@pytest.mark.parametrize("path", ["/dev/pts/../ptmx", "/dev/pts/../null", "/dev/pts/../zero"])
def test_pty_source_refuses_a_path_that_leaves_dev_pts(reactor, path):
    """A path that passes a prefix check but resolves to another device (the PTY multiplexer,
    /dev/null) is refused before it is opened: only a PTY follower major is a PTY."""
    from vncproxy.hypervisor import ConsoleUnavailable

    with pytest.raises(ConsoleUnavailable, match="not a PTY follower"):
        PtySource(reactor, path, None, None)


def test_pty_source_refuses_a_symlink_to_another_device(reactor, tmp_path):
    """A symbolic link named like a PTY, pointing at another character device, is refused."""
    from vncproxy.hypervisor import ConsoleUnavailable

    link = tmp_path / "pts7"
    link.symlink_to("/dev/ptmx")
    with pytest.raises(ConsoleUnavailable, match="not a PTY follower"):
        PtySource(reactor, str(link), None, None)


def test_pty_source_follows_a_symlink_to_a_real_pty(reactor, tmp_path):
    """Resolving is not refusing: a link to a real PTY follower opens it."""
    pty = PtyPair()
    try:
        link = tmp_path / "console"
        link.symlink_to(pty.path)
        source = PtySource(reactor, str(link), lambda data: None, lambda reason: None)
        source.close()
    finally:
        pty.close()
