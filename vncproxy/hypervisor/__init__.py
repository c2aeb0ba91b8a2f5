"""
The hypervisor seam: L{vncproxy.interfaces.IHypervisor} implemented against libvirt
(L{vncproxy.hypervisor.libvirt_adapter}) and as an in-memory fake (L{vncproxy.hypervisor.fake}).
"""

from vncproxy.hypervisor._types import (
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

__all__ = [
    "ConsoleUnavailable",
    "DomainInfo",
    "DomainState",
    "GraphicsUnavailable",
    "HypervisorError",
    "InstanceNotRunning",
    "LifecycleEvent",
    "LifecycleKind",
    "NoSuchInstance",
    "VncEndpoint",
]
