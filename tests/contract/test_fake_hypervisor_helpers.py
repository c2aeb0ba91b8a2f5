"""
FakeHypervisor's test helpers (the world-arranging side that the contract does not cover).
Synchronous: the fake's Deferreds have already fired.
"""

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from tests.support.ptypair import PtyPair
from vncproxy.hypervisor import (
    ConsoleUnavailable,
    DomainState,
    HypervisorError,
    LifecycleEvent,
    LifecycleKind,
    NoSuchInstance,
    VncEndpoint,
)
from vncproxy.hypervisor.fake import FakeHypervisor

S = DomainState
K = LifecycleKind
UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def result_of(d: defer.Deferred):
    results = []
    d.addBoth(results.append)
    assert results, "the fake's Deferreds fire at once"
    return results[0]


@pytest.fixture
def fake():
    hv = FakeHypervisor()
    hv.events = []
    hv.subscribe(hv.events.append)
    return hv


def test_add_domain_emits_defined_then_started(fake):
    """
    Adding a running domain emits DEFINED then STARTED; adding a stopped one only DEFINED.
    """
    info = fake.add_domain("a", uuid=UUID.upper())
    fake.add_domain("b", state=S.SHUTOFF)
    assert info.uuid == UUID
    assert [(e.name, e.kind) for e in fake.events] == [
        ("a", K.DEFINED), ("a", K.STARTED), ("b", K.DEFINED)]


def test_add_domain_rejects_duplicates_and_bad_uuids(fake):
    fake.add_domain("a", uuid=UUID)
    with pytest.raises(ValueError):
        fake.add_domain("a")
    with pytest.raises(ValueError):
        fake.add_domain("b", uuid=UUID.upper())
    with pytest.raises(ValueError):
        fake.add_domain("c", uuid="not-a-uuid")


@pytest.mark.parametrize(
    "start, end, kinds",
    [
        (S.SHUTOFF, S.RUNNING, [K.STARTED]),
        (S.SHUTOFF, S.PAUSED, [K.STARTED, K.SUSPENDED]),
        (S.RUNNING, S.SHUTOFF, [K.STOPPED]),
        (S.RUNNING, S.PAUSED, [K.SUSPENDED]),
        (S.PAUSED, S.RUNNING, [K.RESUMED]),
        (S.PAUSED, S.SHUTOFF, [K.STOPPED]),
        (S.RUNNING, S.SHUTDOWN, [K.SHUTDOWN]),
        (S.RUNNING, S.CRASHED, [K.CRASHED]),
        (S.RUNNING, S.PMSUSPENDED, [K.PMSUSPENDED]),
        (S.RUNNING, S.RUNNING, []),
        (S.RUNNING, S.BLOCKED, []),
    ],
)
def test_set_state_emits_what_libvirt_would(fake, start, end, kinds):
    fake.add_domain("a", state=start)
    del fake.events[:]
    info = fake.set_state("a", end)
    assert info.state == end
    assert [e.kind for e in fake.events] == kinds


def test_set_state_without_events(fake):
    fake.add_domain("a")
    del fake.events[:]
    fake.set_state("a", S.SHUTOFF, emit=False)
    assert fake.events == []
    assert result_of(fake.describe("a")).state == S.SHUTOFF


def test_unknown_instances_raise_no_such_instance(fake):
    for call in (
        lambda: fake.set_state("x", S.RUNNING),
        lambda: fake.remove_domain(UUID),
        lambda: fake.set_consoles("x", serial_pty="/dev/pts/1"),
    ):
        with pytest.raises(NoSuchInstance):
            call()


def test_remove_domain_stops_and_undefines(fake):
    fake.add_domain("a")
    del fake.events[:]
    fake.remove_domain("a")
    assert [e.kind for e in fake.events] == [K.STOPPED, K.UNDEFINED]
    assert result_of(fake.describe("a")).check(NoSuchInstance)


def test_set_consoles_replaces_them(fake):
    """
    set_consoles changes the endpoint and PTY (as a restart does), emitting nothing.
    """
    fake.add_domain("a", vnc=VncEndpoint(host="127.0.0.1", port=5900), serial_pty="/dev/pts/1")
    del fake.events[:]
    fake.set_consoles("a", serial_pty="/dev/pts/2")
    info = result_of(fake.describe("a"))
    assert info.serial_pty == "/dev/pts/2"
    assert info.vnc == VncEndpoint(host="127.0.0.1", port=5900)
    fake.set_consoles("a", vnc=None)
    assert result_of(fake.describe("a")).vnc is None
    assert fake.events == []


def test_emit_delivers_any_event(fake):
    event = LifecycleEvent(UUID, "a", K.REBOOTED)
    fake.emit(event)
    assert fake.events == [event]


def test_unavailable(fake):
    """
    With available False, queries fail with HypervisorError and ping answers False.
    """
    fake.add_domain("a")
    fake.available = False
    assert result_of(fake.describe("a")).check(HypervisorError)
    assert result_of(fake.list_active()).check(HypervisorError)
    assert result_of(fake.list_all()).check(HypervisorError)
    assert result_of(fake.ping()) is False
    fake.available = True
    assert result_of(fake.ping()) is True


@pytest.fixture
def pty():
    pair = PtyPair()
    yield pair
    pair.close()


def test_console_is_exclusive_unless_forced(pty):
    """
    Like libvirt: while one client holds the console, another open fails unless forced; a
    forced open ends the first one (its on_closed is called).
    """
    hv = FakeHypervisor(MemoryReactorClock())
    hv.add_domain("vm1", serial_pty=pty.path)
    first_closed = []
    first = result_of(hv.open_console("vm1", lambda d: None, first_closed.append))
    failure = result_of(hv.open_console("vm1", lambda d: None, lambda r: None))
    assert failure.check(ConsoleUnavailable)
    second = result_of(hv.open_console("vm1", lambda d: None, lambda r: None, force=True))
    assert first_closed == ["console taken over by another client"]
    assert first.disconnected and not second.disconnected
    second.close()


def test_console_ends_when_the_domain_stops(pty):
    """
    Stopping the domain ends its console (on_closed), as QEMU exiting does.
    """
    hv = FakeHypervisor(MemoryReactorClock())
    hv.add_domain("vm1", serial_pty=pty.path)
    closed = []
    source = result_of(hv.open_console("vm1", lambda d: None, closed.append))
    hv.set_state("vm1", S.SHUTOFF)
    assert closed == ["console closed"] and source.disconnected


def test_console_needs_a_reactor_and_a_pty(pty):
    """
    Without a reactor, or for a domain without a serial PTY, open_console is ConsoleUnavailable.
    """
    hv = FakeHypervisor()
    hv.add_domain("vm1", serial_pty=pty.path)
    hv.add_domain("vm2")
    assert result_of(hv.open_console("vm1", None, None)).check(ConsoleUnavailable)
    hv = FakeHypervisor(MemoryReactorClock())
    hv.add_domain("vm2")
    assert result_of(hv.open_console("vm2", None, None)).check(ConsoleUnavailable)
