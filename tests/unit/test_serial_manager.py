"""
SerialManager: capture starts with the service and with every domain start (not with the first
viewer), ends on power-off (viewers closed, log kept), survives reboots, and reopens a console
that was lost while the domain runs (politely: without force), with backoff.
"""

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from tests.support.ptypair import PtyPair, pump
from vncproxy import config
from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import (
    ConsoleUnavailable,
    DomainState,
    LifecycleEvent,
    LifecycleKind,
    NoSuchInstance,
)
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.serial.manager import SerialManager, SerialUnavailable

UUID = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"


class Source:
    def __init__(self):
        self.closed = False
        self.written = b""
        self.producer = None

    def write(self, data):
        self.written += data

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def close(self):
        self.closed = True


class Opener:
    """
    A scripted open_source: each call is recorded with a Deferred the test fires.
    """

    def __init__(self):
        self.calls = []

    def __call__(self, info, on_data, on_closed, force):
        d = defer.Deferred()
        self.calls.append(dict(info=info, on_data=on_data, on_closed=on_closed, force=force, d=d))
        return d

    def succeed(self, i=-1):
        source = Source()
        self.calls[i]["d"].callback(source)
        return source


class Sink:
    network_transport = None

    def __init__(self):
        self.received = b""
        self.closed = None

    def send(self, chunk):
        self.received += chunk.data

    def close(self, code, detail):
        self.closed = (code, detail)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


@pytest.fixture
def world(tmp_path):
    reactor = MemoryReactorClock()
    hv = FakeHypervisor(reactor)
    cfg = config.defaults(serial_log_dir=str(tmp_path / "serial"), serial_scrollback=1024)
    opener = Opener()
    manager = SerialManager(cfg, reactor, hv, open_source=opener)
    yield reactor, hv, manager, opener
    if manager.running:
        manager.stopService()


def test_running_domains_are_captured_when_the_service_starts(world):
    """At start every running domain with a serial PTY is opened, with force; domains without
    one, stopped ones and host serial devices are left alone."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    hv.add_domain("novga", serial_pty=None)
    hv.add_domain("hostdev", serial_pty="/dev/ttyS1")
    hv.add_domain("off", state=DomainState.SHUTOFF, serial_pty="/dev/pts/8")
    manager.startService()
    assert [(c["info"].name, c["force"]) for c in opener.calls] == [("vm1", True)]
    source = opener.succeed()
    assert manager.is_captured(UUID)
    opener.calls[0]["on_data"](b"[vm1 /]# ")
    assert manager.log(UUID).tail() == b"[vm1 /]# "
    assert manager.hub(UUID).recent_output() == b"[vm1 /]# "
    assert manager.hub(UUID).source is source


def test_a_started_domain_is_captured_before_anyone_attaches(world):
    """A STARTED event opens the console (force) right away; its output is logged."""
    reactor, hv, manager, opener = world
    manager.startService()
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/9")
    assert manager.hub(UUID) is not None
    assert [c["force"] for c in opener.calls] == [True]
    opener.succeed()
    opener.calls[0]["on_data"](b"Linux version 6.1\r\n")
    assert manager.log(UUID).tail() == b"Linux version 6.1\r\n"


def test_power_off_closes_viewers_and_keeps_the_log(world):
    """STOPPED closes the console and every viewer (INSTANCE_STOPPED); the log stays, the hub
    keeps its scrollback, and attaching is refused until the next start."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    source = opener.succeed()
    opener.calls[0]["on_data"](b"bye\r\n")
    sink = Sink()
    manager.attach(UUID, sink, interactive=True).open()
    hv.set_state("vm1", DomainState.SHUTOFF)
    assert source.closed
    assert sink.closed == (CloseCode.INSTANCE_STOPPED, None)
    assert manager.hub(UUID) is None
    with pytest.raises(SerialUnavailable):
        manager.attach(UUID, Sink(), interactive=True)
    assert manager.log(UUID).tail() == b"bye\r\n"
    # Started again: a new console, and the previous boot's tail is still the scrollback.
    hv.set_consoles("vm1", serial_pty="/dev/pts/12")
    hv.set_state("vm1", DomainState.RUNNING)
    assert opener.calls[-1]["info"].serial_pty == "/dev/pts/12"
    assert manager.hub(UUID).recent_output() == b"bye\r\n"


def test_reboot_keeps_console_and_viewers(world):
    """A REBOOTED event (same QEMU, same PTY) changes nothing."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    source = opener.succeed()
    sink = Sink()
    manager.attach(UUID, sink, interactive=True).open()
    hv.emit(LifecycleEvent(UUID, "vm1", LifecycleKind.REBOOTED))
    opener.calls[0]["on_data"](b"rebooting\r\n")
    assert not source.closed and sink.closed is None
    assert sink.received == b"rebooting\r\n"
    assert len(opener.calls) == 1


def test_a_lost_console_is_reopened_without_force_with_backoff(world):
    """When the console ends while the domain runs (someone forced it away, libvirtd
    restarted), it is reopened after 1 s, then 2 s, 4 s... without force; viewers stay."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    opener.succeed()
    sink = Sink()
    manager.attach(UUID, sink, interactive=True).open()
    opener.calls[0]["on_closed"]("stream had I/O failure")
    assert not manager.is_captured(UUID)
    reactor.advance(0.9)
    assert len(opener.calls) == 1
    reactor.advance(0.1)
    assert [c["force"] for c in opener.calls] == [True, False]
    opener.calls[1]["d"].errback(ConsoleUnavailable("Active console session exists"))
    reactor.advance(1.9)
    assert len(opener.calls) == 2
    reactor.advance(0.1)
    assert len(opener.calls) == 3
    source = opener.succeed()
    assert manager.hub(UUID).source is source
    assert sink.closed is None
    # A later loss starts again at 1 s.
    opener.calls[2]["on_closed"]("console closed")
    reactor.advance(1.0)
    assert len(opener.calls) == 4


def test_a_lost_console_of_a_stopped_domain_ends_the_capture(world):
    """If the domain turns out to be stopped when reopening (its STOPPED event was missed),
    capture ends and viewers are closed as for a power-off."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    opener.succeed()
    sink = Sink()
    manager.attach(UUID, sink, interactive=True).open()
    hv.set_state("vm1", DomainState.SHUTOFF, emit=False)
    opener.calls[0]["on_closed"]("console closed")
    reactor.advance(1.0)
    assert sink.closed == (CloseCode.INSTANCE_STOPPED, None)
    assert manager.hub(UUID) is None


def test_an_open_that_was_overtaken_is_closed(world):
    """A console that opens after its domain stopped is closed at once, and its data ignored."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    hv.set_state("vm1", DomainState.SHUTOFF)
    late = opener.succeed()
    assert late.closed
    opener.calls[0]["on_data"](b"ghost")
    assert manager.log(UUID).tail() == b""


def test_undefined_domain_drops_its_hub(world):
    """UNDEFINED forgets the hub (and its scrollback); the log files stay."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    opener.succeed()
    opener.calls[0]["on_data"](b"last words")
    hv.remove_domain("vm1")
    assert UUID not in manager._hubs
    assert manager.log(UUID).tail() == b"last words"


def test_open_of_a_vanished_domain_ends_the_capture(world):
    """NoSuchInstance from the opener ends the capture instead of retrying forever."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    opener.calls[0]["d"].errback(NoSuchInstance(UUID))
    assert manager.hub(UUID) is None
    reactor.advance(60)
    assert len(opener.calls) == 1


def test_stopping_the_service_closes_every_console(world):
    """stopService closes the sources and cancels pending retries."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    hv.add_domain("vm2", serial_pty="/dev/pts/8")
    manager.startService()
    first = opener.succeed(0)
    opener.calls[1]["d"].errback(ConsoleUnavailable("busy"))
    manager.stopService()
    assert first.closed
    reactor.advance(60)
    assert len(opener.calls) == 2


def test_check_attach_and_clear(world):
    """check_attach refuses an instance that is not captured; clear() empties log and
    scrollback."""
    reactor, hv, manager, opener = world
    with pytest.raises(SerialUnavailable):
        manager.check_attach(UUID, interactive=True)
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    opener.succeed()
    opener.calls[0]["on_data"](b"password: hunter2\r\n")
    manager.check_attach(UUID, interactive=True)
    manager.clear(UUID)
    assert manager.log(UUID).tail() == b""
    assert manager.hub(UUID).recent_output() == b""


def test_default_source_reads_the_console_through_the_hypervisor(tmp_path):
    """With source = libvirt, the console comes from IHypervisor.open_console (here the fake's,
    on a real PTY): the guest's output reaches the log, a viewer's input reaches the guest."""
    reactor = MemoryReactorClock()
    pty = PtyPair()
    try:
        hv = FakeHypervisor(reactor)
        hv.add_domain("vm1", uuid=UUID, serial_pty=pty.path)
        manager = SerialManager(config.defaults(serial_log_dir=str(tmp_path)), reactor, hv)
        manager.startService()
        source = manager.hub(UUID).source
        pty.guest_prints(b"[vm1 /]# ")
        pump(source)
        assert manager.log(UUID).tail() == b"[vm1 /]# "
        viewer = manager.attach(UUID, Sink(), interactive=True)
        viewer.write(b"id\r")
        pump(source)
        assert pty.typed(expect=3) == b"id\r"
        manager.stopService()
    finally:
        pty.close()


def test_pty_source_opens_the_path_itself(tmp_path):
    """With source = pty the manager opens /dev/pts/N directly."""
    reactor = MemoryReactorClock()
    pty = PtyPair()
    try:
        hv = FakeHypervisor()  # no consoles from the hypervisor needed
        hv.add_domain("vm1", uuid=UUID, serial_pty=pty.path)
        cfg = config.defaults(serial_log_dir=str(tmp_path), serial_source="pty")
        manager = SerialManager(cfg, reactor, hv)
        manager.startService()
        source = manager.hub(UUID).source
        assert source.path == pty.path
        pty.guest_prints(b"direct")
        pump(source)
        assert manager.log(UUID).tail() == b"direct"
        manager.stopService()
        assert source.disconnected
    finally:
        pty.close()


def test_only_selected_domains_are_captured(tmp_path):
    """[serial] domains selects by name or UUID pattern; others are never opened, and an empty
    setting captures nothing."""
    reactor = MemoryReactorClock()
    hv = FakeHypervisor(reactor)
    hv.add_domain("web-1", serial_pty="/dev/pts/1")
    hv.add_domain("db-1", uuid=UUID, serial_pty="/dev/pts/2")
    other = hv.add_domain("other", serial_pty="/dev/pts/3")
    for patterns, expected in [(("web-*", UUID.upper()), ["web-1", "db-1"]), ((), [])]:
        opener = Opener()
        cfg = config.defaults(serial_log_dir=str(tmp_path), serial_domains=patterns)
        manager = SerialManager(cfg, reactor, hv, open_source=opener)
        manager.startService()
        hv.emit(LifecycleEvent(other.uuid, "other", LifecycleKind.STARTED))
        assert sorted(c["info"].name for c in opener.calls) == sorted(expected)
        assert manager.hub(other.uuid) is None
        manager.stopService()


def test_domains_without_a_serial_pty_leave_nothing_behind(world):
    """A started domain without a serial PTY is never opened and keeps no hub."""
    reactor, hv, manager, opener = world
    manager.startService()
    info = hv.add_domain("vnc-only", serial_pty=None)
    assert opener.calls == []
    assert manager.hub(info.uuid) is None and info.uuid not in manager._hubs


# -- gaps and reconnects (issue 10, faults) ------------------------------------------------------

EPOCH = 1_795_000_000  # 2026-11-18T11:06:40Z


def test_gap_marker_lines():
    """Gap markers are one line each, UTC to the second, with the reason for a stop."""
    from vncproxy.serial.domaincapture import gap_marker

    assert gap_marker("stopped", EPOCH, "service stopping") == (
        "[consoleproxy: serial capture stopped at 2026-11-18T11:06:40Z (service stopping)]")
    assert gap_marker("resumed", EPOCH + 61.7) == (
        "[consoleproxy: serial capture resumed at 2026-11-18T11:07:41Z; "
        "output since it stopped is missing]")


def test_a_lost_and_reopened_console_marks_the_gap_for_log_and_viewers(world):
    """Output lost between a console's loss and its reopening is marked by a stopped line (time
    and reason of the loss) and a resumed line, after the output before and before the output
    after, in the log and to viewers."""
    reactor, hv, manager, opener = world
    reactor.advance(EPOCH)
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    opener.succeed()
    sink = Sink()
    manager.attach(UUID, sink, interactive=True).open()
    opener.calls[0]["on_data"](b"tick-1\r\n")
    opener.calls[0]["on_closed"]("stream had I/O failure")
    reactor.advance(1.0)
    opener.calls[1]["d"].errback(ConsoleUnavailable("cannot connect"))
    reactor.advance(2.0)
    opener.succeed()
    opener.calls[2]["on_data"](b"tick-9\r\n")
    expected = (b"tick-1\r\n"
                b"\r\n[consoleproxy: serial capture stopped at 2026-11-18T11:06:40Z "
                b"(stream had I/O failure)]\r\n"
                b"[consoleproxy: serial capture resumed at 2026-11-18T11:06:43Z; "
                b"output since it stopped is missing]\r\n"
                b"tick-9\r\n")
    assert manager.log(UUID).tail() == expected
    assert sink.received == expected
    assert manager.hub(UUID).bytes_from_guest == len(b"tick-1\r\ntick-9\r\n")


def test_a_console_lost_because_the_domain_stopped_is_no_gap(world):
    """When the lost console's domain turns out to be stopped, no marker is written."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    opener.succeed()
    opener.calls[0]["on_data"](b"bye\r\n")
    hv.set_state("vm1", DomainState.SHUTOFF, emit=False)
    opener.calls[0]["on_closed"]("console closed")
    reactor.advance(1.0)
    hv.set_state("vm1", DomainState.RUNNING)
    opener.succeed()
    opener.calls[-1]["on_data"](b"Linux\r\n")
    assert manager.log(UUID).tail() == b"bye\r\nLinux\r\n"


def test_stopping_the_service_marks_where_capture_stopped(world):
    """stopService writes a stopped line after the last output of each running domain (for a
    console already lost: the time and reason of the loss); stopped domains get none."""
    reactor, hv, manager, opener = world
    reactor.advance(EPOCH)
    other = "0b8d1f9e-7c1a-4c55-8e0f-2a6b9d3c1e77"
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    hv.add_domain("vm2", uuid=other, serial_pty="/dev/pts/8")
    hv.add_domain("off", state=DomainState.SHUTOFF, serial_pty="/dev/pts/9")
    manager.startService()
    opener.succeed(0)
    opener.succeed(1)
    opener.calls[0]["on_data"](b"last")
    opener.calls[1]["on_closed"]("stream had I/O failure")
    reactor.advance(0.5)
    manager.stopService()
    assert manager.log(UUID).tail() == (
        b"last\r\n[consoleproxy: serial capture stopped at 2026-11-18T11:06:40Z "
        b"(service stopping)]\r\n")
    assert manager.log(other).tail() == (
        b"\r\n[consoleproxy: serial capture stopped at 2026-11-18T11:06:40Z "
        b"(stream had I/O failure)]\r\n")


def test_a_restarted_service_marks_where_capture_resumed(tmp_path):
    """A service that starts and finds a running domain whose log already holds output writes a
    resumed line before the new output; a domain with no log yet gets none."""
    other = "0b8d1f9e-7c1a-4c55-8e0f-2a6b9d3c1e77"
    cfg = config.defaults(serial_log_dir=str(tmp_path / "serial"))
    (tmp_path / "serial").mkdir()
    (tmp_path / "serial" / f"{UUID}.log").write_bytes(b"before\r\n")
    reactor = MemoryReactorClock()
    reactor.advance(EPOCH)
    hv = FakeHypervisor(reactor)
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    hv.add_domain("vm2", uuid=other, serial_pty="/dev/pts/8")
    opener = Opener()
    manager = SerialManager(cfg, reactor, hv, open_source=opener)
    manager.startService()
    try:
        opener.succeed(0)
        opener.succeed(1)
        opener.calls[0]["on_data"](b"after\r\n")
        opener.calls[1]["on_data"](b"first\r\n")
        assert manager.log(UUID).tail() == (
            b"before\r\n\r\n[consoleproxy: serial capture resumed at 2026-11-18T11:06:40Z; "
            b"output since it stopped is missing]\r\nafter\r\n")
        assert manager.log(other).tail() == b"first\r\n"
    finally:
        manager.stopService()


def test_reconnected_reopens_lost_consoles_at_once_and_finds_new_domains(world):
    """RECONNECTED (libvirtd is back) reopens a lost console now instead of at its next retry,
    and captures a domain that started while events were missed."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    hv.add_domain("late", state=DomainState.SHUTOFF, serial_pty="/dev/pts/8")
    manager.startService()
    opener.succeed()
    opener.calls[0]["on_closed"]("stream had I/O failure")
    hv.available = False
    reactor.advance(1.0)  # retry 1: libvirt down; next in 2 s
    reactor.advance(2.0)  # retry 2: down; next in 4 s
    assert len(opener.calls) == 1
    hv.available = True
    hv.set_state("late", DomainState.RUNNING, emit=False)
    hv.reconnected()
    assert sorted((c["info"].name, c["force"]) for c in opener.calls[1:]) == [
        ("late", True), ("vm1", False)]
    reactor.advance(10)
    assert len(opener.calls) == 3


def test_reconnected_leaves_healthy_captures_alone(world):
    """RECONNECTED does not touch a console that is still attached (a PTY read directly)."""
    reactor, hv, manager, opener = world
    hv.add_domain("vm1", uuid=UUID, serial_pty="/dev/pts/7")
    manager.startService()
    source = opener.succeed()
    hv.reconnected()
    assert len(opener.calls) == 1 and not source.closed
    assert manager.hub(UUID).source is source
