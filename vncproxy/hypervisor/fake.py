"""
An in-memory L{IHypervisor} for unit tests of the modules that use one.

It faces the same contract tests as L{vncproxy.hypervisor.libvirt_adapter.LibvirtHypervisor}
(C{tests/contract/test_hypervisor_contract.py}), so a test written against it holds for libvirt.
Differences that a test may rely on: queries return already-fired L{Deferred}s, and events are
delivered synchronously, on the thread that changed the world (the reactor thread in tests).

Usage::

    hv = FakeHypervisor()
    info = hv.add_domain("vm1", vnc=VncEndpoint(host="127.0.0.1", port=5900, password="pw"),
                         serial_pty="/dev/pts/7")
    hv.set_state("vm1", DomainState.SHUTOFF)      # listeners get LifecycleKind.STOPPED
    hv.available = False                           # describe() fails, ping() is False

Serial consoles are real PTYs: point C{serial_pty} at the follower side of an C{os.openpty()}
pair and L{open_console} reads it with a L{vncproxy.serial.pty.PtySource} (this needs the
C{reactor} argument); the test plays QEMU on the leader side. Like libvirt, one client holds a
domain's console at a time: a second open fails unless forced, and a forced one ends the first
(its C{on_closed} is called).
"""

import uuid as _uuid
from dataclasses import dataclass, field

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from vncproxy.hypervisor._subscribers import Subscribers
from vncproxy.hypervisor._types import (
    _ACTIVE,
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
from vncproxy.hypervisor.domxml import canonical_uuid
from vncproxy.interfaces import IHypervisor
from vncproxy.serial.pty import PtySource

_UNSET = object()

# libvirt's event detail numbers for the events set_state() emits.
_DETAIL = {
    LifecycleKind.DEFINED: 0,  # ADDED
    LifecycleKind.UNDEFINED: 0,  # REMOVED
    LifecycleKind.STARTED: 0,  # BOOTED
    LifecycleKind.SUSPENDED: 0,  # PAUSED
    LifecycleKind.RESUMED: 0,  # UNPAUSED
    LifecycleKind.STOPPED: 1,  # DESTROYED
    LifecycleKind.SHUTDOWN: 0,  # FINISHED
    LifecycleKind.PMSUSPENDED: 0,  # MEMORY
    LifecycleKind.CRASHED: 0,  # PANICKED
}


@dataclass
class _Domain:
    uuid: str
    name: str
    state: DomainState
    vnc: VncEndpoint | None
    serial_pty: str | None
    keys_sent: list = field(default_factory=list)

    def info(self) -> DomainInfo:
        active = self.state in _ACTIVE
        # Like libvirt: consoles exist only while the domain's QEMU process does.
        return DomainInfo(
            uuid=self.uuid,
            name=self.name,
            state=self.state,
            vnc=self.vnc if active else None,
            serial_pty=self.serial_pty if active else None,
        )


def _transition(old: DomainState, new: DomainState) -> list[LifecycleKind]:
    """
    The lifecycle events libvirt reports when a domain goes from C{old} to C{new}.
    """
    if old == new:
        return []
    was, now = old in _ACTIVE, new in _ACTIVE
    if not was and now:
        kinds = [LifecycleKind.STARTED]
        if new == DomainState.PAUSED:
            kinds.append(LifecycleKind.SUSPENDED)
        elif new == DomainState.PMSUSPENDED:
            kinds.append(LifecycleKind.PMSUSPENDED)
        return kinds
    if was and not now:
        return [LifecycleKind.CRASHED if new == DomainState.CRASHED else LifecycleKind.STOPPED]
    if was and now:
        if new == DomainState.PAUSED:
            return [LifecycleKind.SUSPENDED]
        if new == DomainState.PMSUSPENDED:
            return [LifecycleKind.PMSUSPENDED]
        if new == DomainState.SHUTDOWN:
            return [LifecycleKind.SHUTDOWN]
        if old in (DomainState.PAUSED, DomainState.PMSUSPENDED):
            return [LifecycleKind.RESUMED]
        return []
    if new == DomainState.CRASHED:
        return [LifecycleKind.CRASHED]
    return []


@implementer(IHypervisor)
class FakeHypervisor(Service):
    """
    Domains kept in memory, changed by the test through L{add_domain}, L{set_state},
    L{set_consoles}, L{remove_domain} and L{emit}.

    Lookups follow libvirt's adapter: an instance reference that is a UUID (any case) is looked
    up by UUID first, then by name. Consoles (C{vnc}, C{serial_pty}) are reported only while the
    domain is active.

    @ivar available: when C{False}, L{describe} and L{list_active} fail with
        L{HypervisorError} and L{ping} answers C{False}, as when libvirtd is down. Events still
        go through L{emit}.
    """

    _log = Logger()

    def __init__(self, reactor=None):
        self.available = True
        self.graphics = None  # see open_graphics
        self._reactor = reactor
        self._domains: dict[str, _Domain] = {}
        self._listeners = Subscribers()
        self._consoles: dict[str, object] = {}  # domain UUID -> (source, on_closed)

    # -- arranging the world --------------------------------------------------------------

    def add_domain(
        self,
        name: str,
        uuid: str | None = None,
        state: DomainState = DomainState.RUNNING,
        vnc: VncEndpoint | None = None,
        serial_pty: str | None = None,
    ) -> DomainInfo:
        """
        Define a domain (emitting DEFINED, then STARTED when C{state} is active).

        @param uuid: its UUID in any case (a random one when C{None}).
        @raise ValueError: when the name or UUID is taken, or C{uuid} is not a UUID.
        """
        if uuid is None:
            uuid = str(_uuid.uuid4())
        canonical = canonical_uuid(uuid)
        if canonical is None:
            raise ValueError(f"not a UUID: {uuid!r}")
        if canonical in self._domains:
            raise ValueError(f"a domain with UUID {canonical} exists")
        if any(d.name == name for d in self._domains.values()):
            raise ValueError(f"a domain named {name!r} exists")
        state = DomainState(state)
        domain = _Domain(canonical, name, DomainState.SHUTOFF, vnc, serial_pty)
        self._domains[canonical] = domain
        self._emit_kind(domain, LifecycleKind.DEFINED)
        self.set_state(canonical, state)
        return domain.info()

    def set_state(self, instance: str, state: DomainState, emit: bool = True) -> DomainInfo:
        """
        Change a domain's state, emitting the events libvirt would (STARTED when it becomes
        active, STOPPED when it becomes inactive, SUSPENDED/RESUMED around PAUSED, ...) unless
        C{emit} is false.

        @raise NoSuchInstance: when there is no such domain.
        """
        domain = self._get(instance)
        old, domain.state = domain.state, DomainState(state)
        if old in _ACTIVE and domain.state not in _ACTIVE:
            self._console_gone(domain.uuid)
        if emit:
            for kind in _transition(old, domain.state):
                self._emit_kind(domain, kind)
        return domain.info()

    def set_consoles(self, instance: str, vnc=_UNSET, serial_pty=_UNSET) -> DomainInfo:
        """
        Replace a domain's VNC endpoint and/or serial PTY path (a real domain gets a new PTY on
        every start). Emits nothing.

        @raise NoSuchInstance: when there is no such domain.
        """
        domain = self._get(instance)
        if vnc is not _UNSET:
            domain.vnc = vnc
        if serial_pty is not _UNSET:
            domain.serial_pty = serial_pty
        return domain.info()

    def remove_domain(self, instance: str, emit: bool = True) -> None:
        """
        Stop (if active) and undefine a domain, emitting STOPPED and UNDEFINED.

        @raise NoSuchInstance: when there is no such domain.
        """
        domain = self._get(instance)
        self.set_state(domain.uuid, DomainState.SHUTOFF, emit=emit)
        del self._domains[domain.uuid]
        if emit:
            self._emit_kind(domain, LifecycleKind.UNDEFINED)

    def emit(self, event: LifecycleEvent) -> None:
        """
        Deliver C{event} to every subscriber, now. A subscriber that raises is logged.
        """
        self._listeners.deliver(event)

    def reconnected(self) -> None:
        """
        Deliver L{LifecycleKind.RECONNECTED}, as the libvirt adapter does when it has reopened a
        connection that libvirtd closed (e.g. after setting C{available} back to C{True}).
        """
        self.emit(LifecycleEvent("", "", LifecycleKind.RECONNECTED))

    # -- IHypervisor ----------------------------------------------------------------------

    def describe(self, instance):
        if not self.available:
            return defer.fail(HypervisorError("the fake hypervisor is unavailable"))
        domain = self._find(instance)
        if domain is None:
            return defer.fail(NoSuchInstance(instance))
        return defer.succeed(domain.info())

    def list_active(self):
        if not self.available:
            return defer.fail(HypervisorError("the fake hypervisor is unavailable"))
        return defer.succeed(
            [d.info() for d in self._domains.values() if d.state in _ACTIVE]
        )

    def list_all(self):
        if not self.available:
            return defer.fail(HypervisorError("the fake hypervisor is unavailable"))
        return defer.succeed([d.info() for d in self._domains.values()])

    def subscribe(self, listener):
        return self._listeners.add(listener)

    def open_console(self, instance, on_data, on_closed, force=False):
        if not self.available:
            return defer.fail(HypervisorError("the fake hypervisor is unavailable"))
        domain = self._find(instance)
        if domain is None:
            return defer.fail(NoSuchInstance(instance))
        if domain.state not in _ACTIVE:
            return defer.fail(ConsoleUnavailable(f"instance {instance} is not running"))
        if not domain.serial_pty:
            return defer.fail(ConsoleUnavailable(f"instance {instance} has no serial console"))
        if self._reactor is None:
            return defer.fail(ConsoleUnavailable("FakeHypervisor(reactor) is needed for consoles"))
        held = self._consoles.get(domain.uuid)
        if held is not None and not held[0].disconnected:
            if not force:
                return defer.fail(ConsoleUnavailable("another client holds the console"))
            source, their_on_closed = held
            source.close()
            their_on_closed("console taken over by another client")
        try:
            source = PtySource(self._reactor, domain.serial_pty, on_data, on_closed)
        except ConsoleUnavailable as e:
            return defer.fail(e)
        self._consoles[domain.uuid] = (source, on_closed)
        return defer.succeed(source)

    def send_keys(self, instance, keycodes, hold_ms):
        return self._on_running(instance, lambda d: d.keys_sent.append(tuple(keycodes)))

    def open_graphics(self, instance):
        """
        Like libvirt's test driver: not supported, unless C{graphics} was set to a callable
        C{graphics(uuid) -> fd} (a test's stand-in for QEMU's authenticated socket).
        """
        def open_():
            domain = self._running(instance)
            if self.graphics is None:
                raise GraphicsUnavailable("this function is not supported by the connection "
                                          "driver")
            return self.graphics(domain.uuid)

        return defer.maybeDeferred(open_)

    def inject_nmi(self, instance):
        return self._on_running(instance, lambda d: d.keys_sent.append("nmi"))

    def keys_sent(self, instance: str) -> list:
        """
        What L{send_keys} (a tuple of key codes each) and L{inject_nmi} (C{"nmi"}) delivered to
        a domain, in order.
        """
        return list(self._get(instance).keys_sent)

    def ping(self):
        return defer.succeed(bool(self.available))

    def _running(self, instance):
        if not self.available:
            raise HypervisorError("the fake hypervisor is unavailable")
        domain = self._find(instance)
        if domain is None:
            raise NoSuchInstance(instance)
        if domain.state not in _ACTIVE:
            raise InstanceNotRunning(f"instance {instance} is not running")
        return domain

    def _on_running(self, instance, action):
        return defer.maybeDeferred(lambda: action(self._running(instance)) and None)

    # -- internals ------------------------------------------------------------------------

    def _console_gone(self, uuid: str) -> None:
        # The QEMU process is gone: its console stream ends, as libvirt's does (EOF).
        held = self._consoles.pop(uuid, None)
        if held is not None and not held[0].disconnected:
            source, on_closed = held
            source.close()
            on_closed("console closed")

    def _find(self, instance: str) -> _Domain | None:
        canonical = canonical_uuid(instance)
        if canonical is not None and canonical in self._domains:
            return self._domains[canonical]
        return next((d for d in self._domains.values() if d.name == instance), None)

    def _get(self, instance: str) -> _Domain:
        domain = self._find(instance)
        if domain is None:
            raise NoSuchInstance(instance)
        return domain

    def _emit_kind(self, domain: _Domain, kind: LifecycleKind) -> None:
        self.emit(LifecycleEvent(domain.uuid, domain.name, kind, _DETAIL[kind]))
