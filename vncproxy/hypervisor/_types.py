"""
Value types the hypervisor adapters return.

Everything here is plain data: no libvirt, no Twisted. Secrets (the VNC password) are kept out
of C{repr} so that a logged object never carries one.
"""

from dataclasses import dataclass, field
from enum import Enum


class NoSuchInstance(LookupError):
    """
    No domain has the given UUID or name.
    """

    def __init__(self, instance):
        super().__init__(f"no such instance: {instance}")
        self.instance = instance


class HypervisorError(RuntimeError):
    """
    The hypervisor could not be asked (connection lost, daemon down, unexpected failure).
    """


class ConsoleUnavailable(HypervisorError):
    """
    A domain's serial console cannot be opened: the domain is not running, has no serial
    console, another client holds it, or the driver cannot open consoles.
    """


class InstanceNotRunning(HypervisorError):
    """
    The domain exists but is not running, so it cannot take keys or an NMI.
    """


class GraphicsUnavailable(HypervisorError):
    """
    The hypervisor will not hand over a socket to the domain's VNC server (the driver cannot,
    the domain has no VNC graphics, QEMU refused).
    """


@dataclass(frozen=True)
class VncEndpoint:
    """
    Where a domain's VNC server can be reached, and its password.

    Exactly one of (C{host}, C{port}) or C{socket} is set. A wildcard listen address
    (C{0.0.0.0}, C{::}) is already mapped to the matching loopback address.
    """

    host: str | None = None
    port: int | None = None
    socket: str | None = None
    password: str | None = field(default=None, repr=False)


class DomainState(Enum):
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # being shut down; QEMU still runs
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"
    NOSTATE = "nostate"


_ACTIVE = {DomainState.RUNNING, DomainState.BLOCKED, DomainState.PAUSED,
           DomainState.SHUTDOWN, DomainState.PMSUSPENDED}


@dataclass(frozen=True)
class DomainInfo:
    """
    What the proxy needs to know about one domain, read from its live (secure) XML.

    @ivar uuid: the domain's UUID, lower case with dashes.
    @ivar name: the domain's name.
    @ivar state: its L{DomainState}.
    @ivar vnc: the VNC server, or C{None} when the domain has no VNC graphics (or is not running,
        so that no port was allocated).
    @ivar serial_pty: the host path of the first C{<serial type='pty'>} (or C{type='dev'}) source,
        or C{None}.
    """

    uuid: str
    name: str
    state: DomainState
    vnc: VncEndpoint | None = None
    serial_pty: str | None = None

    @property
    def active(self) -> bool:
        """
        Whether the domain's QEMU process exists (so that its consoles can be reached).
        """
        return self.state in _ACTIVE


class LifecycleKind(Enum):
    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    STOPPED = "stopped"
    SHUTDOWN = "shutdown"
    PMSUSPENDED = "pmsuspended"
    CRASHED = "crashed"
    REBOOTED = "rebooted"  # libvirt's REBOOT event: same QEMU process, consoles stay
    # Not about one domain (uuid and name are ""): the connection to the hypervisor was lost and
    # is open again. Events of the time in between were missed: re-read what matters.
    RECONNECTED = "reconnected"


@dataclass(frozen=True)
class LifecycleEvent:
    """
    A domain lifecycle event, delivered on the reactor thread. For
    L{LifecycleKind.RECONNECTED}, C{uuid} and C{name} are empty.
    """

    uuid: str
    name: str
    kind: LifecycleKind
    detail: int = 0
