"""
The IHypervisor contract, run against FakeHypervisor and against LibvirtHypervisor on libvirt's
test:///default driver (see conftest.py for the drivers that arrange the world).

A unit test elsewhere that relies on FakeHypervisor behaving some way should find that
behaviour asserted here, so that it holds for libvirt too.
"""

import inspect
import os
import select
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.python import threadable
from zope.interface.verify import verifyObject

from vncproxy.hypervisor import (
    ConsoleUnavailable,
    DomainInfo,
    DomainState,
    GraphicsUnavailable,
    HypervisorError,
    InstanceNotRunning,
    LifecycleEvent,
    LifecycleKind,
    NoSuchInstance,
    VncEndpoint,
)
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.hypervisor.libvirt_adapter import LibvirtHypervisor
from vncproxy.interfaces import IConsoleSource, IHypervisor


def _start_one(world, label="vm", port=5907, password="s3cret-pw"):
    name = world.unique_name(label)
    pty = world.new_pty()
    domain_uuid = world.define_and_start(name, port, password, pty)
    return name, domain_uuid.lower(), pty


class _Recorder:
    """
    A listener that records events for one domain and whether each came on the reactor thread.
    """

    def __init__(self, domain_uuid=None):
        self.domain_uuid = domain_uuid
        self.events: list[LifecycleEvent] = []
        self.off_reactor_thread = 0

    def __call__(self, event):
        if not threadable.isInIOThread():
            self.off_reactor_thread += 1
        if self.domain_uuid is None or event.uuid == self.domain_uuid:
            self.events.append(event)

    def kinds(self):
        return [e.kind for e in self.events]


def _kinds_of(recorder, domain_uuid):
    return [e.kind for e in recorder.events if e.uuid == domain_uuid]


def _in_order(expected, kinds):
    """
    Whether C{expected} occurs in C{kinds} in this order (other events may come in between).
    """
    remaining = iter(kinds)
    return all(kind in remaining for kind in expected)


def test_provides_the_interface(world):
    """
    Both implementations provide IHypervisor, with the declared method signatures.
    """
    assert verifyObject(IHypervisor, world.hypervisor)


def test_fake_and_real_have_the_same_signatures():
    """
    Every IHypervisor method of the fake takes exactly the arguments of the real one.
    """
    for name in IHypervisor.names():
        real = inspect.signature(getattr(LibvirtHypervisor, name))
        fake = inspect.signature(getattr(FakeHypervisor, name))
        assert real == fake, name


@pytest_twisted.inlineCallbacks
def test_describe_by_name(world):
    """
    A running domain described by name gives its UUID, state, VNC endpoint and serial PTY.
    """
    name, domain_uuid, pty = _start_one(world, port=5911, password="pw-5911")
    info = yield world.hypervisor.describe(name)
    assert isinstance(info, DomainInfo)
    assert info.uuid == domain_uuid
    assert info.name == name
    assert info.state == DomainState.RUNNING
    assert info.active
    assert info.vnc == VncEndpoint(host="127.0.0.1", port=5911, password="pw-5911")
    assert info.serial_pty == pty


@pytest_twisted.inlineCallbacks
def test_describe_by_uuid_in_any_case(world):
    """
    A domain is found by its UUID in lower and upper case, and the answer is the same as by name.
    """
    name, domain_uuid, _ = _start_one(world)
    by_name = yield world.hypervisor.describe(name)
    lower = yield world.hypervisor.describe(domain_uuid.lower())
    upper = yield world.hypervisor.describe(domain_uuid.upper())
    assert lower == by_name
    assert upper == by_name
    assert upper.uuid == domain_uuid.lower()


@pytest.mark.parametrize("instance", ["contract-no-such-domain", str(uuid.uuid4()), ""])
@pytest_twisted.inlineCallbacks
def test_describe_unknown_fails_with_no_such_instance(world, instance):
    """
    An unknown name or UUID fails with NoSuchInstance naming what was asked for.
    """
    with pytest.raises(NoSuchInstance) as caught:
        yield world.hypervisor.describe(instance)
    assert caught.value.instance == instance


@pytest_twisted.inlineCallbacks
def test_describe_after_undefine_fails_with_no_such_instance(world):
    """
    A domain that was undefined is no longer found, by name or by UUID.
    """
    name, domain_uuid, _ = _start_one(world)
    world.undefine(name)
    for instance in (name, domain_uuid):
        with pytest.raises(NoSuchInstance):
            yield world.hypervisor.describe(instance)


@pytest_twisted.inlineCallbacks
def test_stopped_domain_is_inactive_without_consoles(world):
    """
    A destroyed domain is SHUTOFF, not active, and has no VNC endpoint or serial PTY; started
    again it has both.
    """
    name, _, pty = _start_one(world, port=5912, password="pw-5912")
    world.destroy(name)
    info = yield world.hypervisor.describe(name)
    assert info.state == DomainState.SHUTOFF
    assert not info.active
    assert info.vnc is None
    assert info.serial_pty is None

    world.start(name)
    info = yield world.hypervisor.describe(name)
    assert info.state == DomainState.RUNNING
    assert info.active
    assert info.vnc == VncEndpoint(host="127.0.0.1", port=5912, password="pw-5912")
    assert info.serial_pty == pty


@pytest_twisted.inlineCallbacks
def test_paused_domain_is_active_with_consoles(world, wait_until):
    """
    A suspended domain is PAUSED and still active with its consoles; suspend and resume emit
    SUSPENDED and RESUMED.
    """
    recorder = _Recorder()
    world.hypervisor.subscribe(recorder)
    yield world.hypervisor.ping()
    name, domain_uuid, pty = _start_one(world, port=5915, password="pw-5915")
    world.suspend(name)
    info = yield world.hypervisor.describe(name)
    assert info.state == DomainState.PAUSED
    assert info.active
    assert info.vnc == VncEndpoint(host="127.0.0.1", port=5915, password="pw-5915")
    assert info.serial_pty == pty
    world.resume(name)
    assert (yield world.hypervisor.describe(name)).state == DomainState.RUNNING
    expected = [LifecycleKind.STARTED, LifecycleKind.SUSPENDED, LifecycleKind.RESUMED]
    yield wait_until(lambda: _in_order(expected, _kinds_of(recorder, domain_uuid)))


@pytest_twisted.inlineCallbacks
def test_list_active_lists_only_active_domains(world):
    """
    list_active describes the running domains and leaves out the stopped ones.
    """
    running, running_uuid, _ = _start_one(world, "running", port=5913)
    stopped, stopped_uuid, _ = _start_one(world, "stopped", port=5914)
    world.destroy(stopped)
    infos = yield world.hypervisor.list_active()
    by_uuid = {info.uuid: info for info in infos}
    assert running_uuid in by_uuid
    assert stopped_uuid not in by_uuid
    assert by_uuid[running_uuid] == (yield world.hypervisor.describe(running))
    assert all(info.active for info in infos)


@pytest_twisted.inlineCallbacks
def test_list_all_lists_stopped_domains_too(world):
    """
    list_all describes every domain: the running one as describe does, the stopped one with
    its state and without console details.
    """
    running, running_uuid, _ = _start_one(world, "all-running", port=5915)
    stopped, stopped_uuid, _ = _start_one(world, "all-stopped", port=5916)
    world.destroy(stopped)
    infos = yield world.hypervisor.list_all()
    by_uuid = {info.uuid: info for info in infos}
    assert by_uuid[running_uuid] == (yield world.hypervisor.describe(running))
    assert by_uuid[stopped_uuid].name == stopped
    assert by_uuid[stopped_uuid].state is DomainState.SHUTOFF
    assert by_uuid[stopped_uuid].vnc is None


@pytest.mark.parametrize("instance", ["contract-no-such-domain", str(uuid.uuid4())])
@pytest_twisted.inlineCallbacks
def test_open_console_of_unknown_fails_with_no_such_instance(world, instance):
    """
    Opening the console of an unknown domain fails with NoSuchInstance.
    """
    with pytest.raises(NoSuchInstance):
        yield world.hypervisor.open_console(instance, lambda data: None, lambda reason: None)


@pytest_twisted.inlineCallbacks
def test_open_console_of_stopped_domain_is_unavailable(world):
    """
    A stopped domain has no console to open: ConsoleUnavailable (a HypervisorError).
    """
    name, _, _ = _start_one(world)
    world.destroy(name)
    with pytest.raises(ConsoleUnavailable):
        yield world.hypervisor.open_console(name, lambda data: None, lambda reason: None,
                                            force=True)


@pytest_twisted.inlineCallbacks
def test_open_console_of_running_domain(world, wait_until):
    """
    A running domain's console delivers what its PTY prints and sends what is written, until
    closed; libvirt's test:///default cannot open consoles at all and says so with
    ConsoleUnavailable (the real libvirt path is covered end to end against QEMU).
    """
    name, _, pty = _start_one(world)
    got = []
    if world.kind == "libvirt":
        with pytest.raises(ConsoleUnavailable, match="not supported"):
            yield world.hypervisor.open_console(name, got.append, lambda reason: None)
        return
    console = yield world.hypervisor.open_console(name, got.append, lambda reason: None)
    assert verifyObject(IConsoleSource, console)
    leader = world.leaders[pty]
    os.write(leader, b"[guest /]# ")
    yield wait_until(lambda: b"".join(got) == b"[guest /]# ")
    console.write(b"uname\r")
    yield wait_until(lambda: _readable(leader))
    assert os.read(leader, 100) == b"uname\r"
    console.close()


def _readable(fd):
    return bool(select.select([fd], [], [], 0)[0])


@pytest_twisted.inlineCallbacks
def test_keys_and_nmi_reach_a_running_domain(world):
    """
    A running domain takes a key combination (Linux key codes) and an NMI: both fire with None.
    """
    name, domain_uuid, _ = _start_one(world)
    assert (yield world.hypervisor.send_keys(name, [56, 99, 31], 100)) is None
    assert (yield world.hypervisor.send_keys(domain_uuid, [29, 56, 111], 0)) is None
    assert (yield world.hypervisor.inject_nmi(name)) is None


@pytest_twisted.inlineCallbacks
def test_keys_and_nmi_to_a_stopped_domain_fail_with_not_running(world):
    """
    A stopped domain takes neither keys nor an NMI: InstanceNotRunning (a HypervisorError).
    """
    name, _, _ = _start_one(world)
    world.destroy(name)
    with pytest.raises(InstanceNotRunning):
        yield world.hypervisor.send_keys(name, [56, 99, 31], 100)
    with pytest.raises(InstanceNotRunning):
        yield world.hypervisor.inject_nmi(name)


@pytest.mark.parametrize("instance", ["contract-no-such-domain", str(uuid.uuid4())])
@pytest_twisted.inlineCallbacks
def test_keys_and_nmi_to_unknown_fail_with_no_such_instance(world, instance):
    """
    Keys and an NMI for an unknown domain fail with NoSuchInstance.
    """
    with pytest.raises(NoSuchInstance):
        yield world.hypervisor.send_keys(instance, [28], 100)
    with pytest.raises(NoSuchInstance):
        yield world.hypervisor.inject_nmi(instance)


@pytest_twisted.inlineCallbacks
def test_open_graphics_where_the_driver_cannot(world):
    """libvirt's test driver cannot hand over a VNC socket: GraphicsUnavailable for a running
    domain (the fake, by default, the same); a stopped one is InstanceNotRunning, an unknown one
    NoSuchInstance."""
    name, _, _ = _start_one(world)
    with pytest.raises(GraphicsUnavailable, match="not supported"):
        yield world.hypervisor.open_graphics(name)
    with pytest.raises(NoSuchInstance):
        yield world.hypervisor.open_graphics("contract-no-such-domain")
    world.destroy(name)
    with pytest.raises(InstanceNotRunning):
        yield world.hypervisor.open_graphics(name)


@pytest_twisted.inlineCallbacks
def test_ping_answers_true(world):
    """
    A reachable hypervisor answers ping with True.
    """
    assert (yield world.hypervisor.ping()) is True


@pytest_twisted.inlineCallbacks
def test_unreachable_hypervisor(world):
    """
    When the hypervisor cannot be reached, ping answers False (it never fails) and queries fail
    with HypervisorError.
    """
    hypervisor = world.unreachable_hypervisor()
    hypervisor.startService()
    try:
        assert (yield hypervisor.ping()) is False
        with pytest.raises(HypervisorError):
            yield hypervisor.describe("anything")
        with pytest.raises(HypervisorError):
            yield hypervisor.list_active()
    finally:
        yield defer.maybeDeferred(hypervisor.stopService)


@pytest_twisted.inlineCallbacks
def test_events_for_start_and_destroy(world, wait_until):
    """
    A subscriber gets STARTED when a domain starts and STOPPED when it is destroyed, in that
    order, with the domain's UUID and name, on the reactor thread.
    """
    everything = _Recorder()
    world.hypervisor.subscribe(everything)
    yield world.hypervisor.ping()  # the subscription is in place once a query completed

    name, domain_uuid, _ = _start_one(world)
    yield wait_until(lambda: LifecycleKind.STARTED in _kinds_of(everything, domain_uuid))
    world.destroy(name)
    yield wait_until(lambda: LifecycleKind.STOPPED in _kinds_of(everything, domain_uuid))
    world.start(name)
    expected = [LifecycleKind.STARTED, LifecycleKind.STOPPED, LifecycleKind.STARTED]
    yield wait_until(lambda: _in_order(expected, _kinds_of(everything, domain_uuid)))

    ours = [e for e in everything.events if e.uuid == domain_uuid]
    assert {e.name for e in ours} == {name}
    assert all(isinstance(e.detail, int) for e in ours)
    assert everything.off_reactor_thread == 0


@pytest_twisted.inlineCallbacks
def test_unsubscribe_stops_delivery(world, wait_until):
    """
    After unsubscribing, a listener gets no more events, while other subscribers still do.
    """
    name, domain_uuid, _ = _start_one(world)
    leaving, staying = _Recorder(domain_uuid), _Recorder(domain_uuid)
    unsubscribe = world.hypervisor.subscribe(leaving)
    world.hypervisor.subscribe(staying)
    yield world.hypervisor.ping()
    world.destroy(name)
    yield wait_until(lambda: LifecycleKind.STOPPED in leaving.kinds())
    yield wait_until(lambda: LifecycleKind.STOPPED in staying.kinds())

    unsubscribe()
    unsubscribe()  # harmless twice
    before = list(leaving.events)
    world.start(name)
    yield wait_until(
        lambda: _in_order([LifecycleKind.STOPPED, LifecycleKind.STARTED], staying.kinds())
    )
    assert leaving.events == before


@pytest_twisted.inlineCallbacks
def test_failing_listener_is_logged_and_does_not_stop_delivery(world, wait_until):
    """
    A listener that raises is logged, and the listeners after it still get the event.
    """
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        def explode(event):
            raise RuntimeError("listener bug")

        world.hypervisor.subscribe(explode)
        name, domain_uuid, _ = _start_one(world)
        after = _Recorder(domain_uuid)
        world.hypervisor.subscribe(after)
        yield world.hypervisor.ping()
        world.destroy(name)
        yield wait_until(lambda: LifecycleKind.STOPPED in after.kinds())
    finally:
        globalLogPublisher.removeObserver(logged.append)
    failures = [e["log_failure"] for e in logged if "log_failure" in e]
    assert any(f.check(RuntimeError) for f in failures)
