"""
What one libvirt call on an open connection does for L{LibvirtHypervisor}: find a domain by
UUID or name, read its state and XML into a L{DomainInfo}, send it keys or an NMI, open its
graphics or its console, and translate libvirt's errors into the hypervisor's
(L{NoSuchInstance}, L{InstanceNotRunning}, L{ConsoleUnavailable}, L{GraphicsUnavailable},
L{HypervisorError}).

Every function here blocks and runs on the adapter's worker thread with the connection as its
first argument. An error that says the connection itself failed (L{is_connection_error}) is
re-raised as C{libvirtError}, so that the adapter reopens the connection and tries once more;
the connection, its threads and its events are the adapter's
(L{vncproxy.hypervisor.libvirt_adapter}).
"""

import libvirt

from vncproxy.hypervisor._types import (
    ConsoleUnavailable,
    DomainInfo,
    DomainState,
    GraphicsUnavailable,
    HypervisorError,
    InstanceNotRunning,
    NoSuchInstance,
)
from vncproxy.hypervisor.domxml import canonical_uuid, parse_domain_xml
from vncproxy.hypervisor.libvirt_console import LibvirtConsole

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PMSUSPENDED,
}


# -- libvirt's errors --------------------------------------------------------------------------


def _error_code(e: libvirt.libvirtError) -> int | None:
    return e.get_error_code()


def is_alive(conn: libvirt.virConnect) -> bool:
    """
    Whether libvirt still thinks C{conn} is open (C{False} if even asking fails).
    """
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def is_connection_error(conn: libvirt.virConnect, e: libvirt.libvirtError) -> bool:
    """
    Whether C{e} says that the connection itself failed (so that reopening it may help).
    """
    code = _error_code(e)
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN):
        return True
    if code in (
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_INTERNAL_ERROR,
    ):
        return e.get_error_domain() in (
            libvirt.VIR_FROM_REMOTE,
            libvirt.VIR_FROM_RPC,
        ) or not is_alive(conn)
    return False


def message(e: libvirt.libvirtError) -> str:
    """
    The text of a libvirt error, for logs and our own errors.
    """
    return e.get_error_message() or str(e)


def _abort_quietly(stream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass


# -- calls on a domain --------------------------------------------------------------------------


def lookup(conn, instance: str):
    """
    The domain whose UUID (in any spelling L{canonical_uuid} accepts) or name is C{instance}.

    @raise NoSuchInstance: there is none.
    """
    canonical = canonical_uuid(instance)
    if canonical is not None:
        try:
            return conn.lookupByUUIDString(canonical)
        except libvirt.libvirtError as e:
            if _error_code(e) != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    try:
        return conn.lookupByName(instance)
    except libvirt.libvirtError as e:
        if _error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:
            raise NoSuchInstance(instance) from None
        raise


def describe(conn, instance: str, xml_flags: int) -> DomainInfo:
    """
    L{IHypervisor.describe}: see L{domain_info} for C{xml_flags}.
    """
    dom = lookup(conn, instance)
    try:
        return domain_info(dom, xml_flags)
    except libvirt.libvirtError as e:
        if _error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:  # undefined meanwhile
            raise NoSuchInstance(instance) from None
        raise


def on_running(conn, instance: str, action) -> None:
    """
    Run C{action(dom)} on a running domain: a stopped one is L{InstanceNotRunning}.
    """
    dom = lookup(conn, instance)
    try:
        action(dom)
    except libvirt.libvirtError as e:
        code = _error_code(e)
        if code == libvirt.VIR_ERR_NO_DOMAIN:  # undefined meanwhile
            raise NoSuchInstance(instance) from None
        if code == libvirt.VIR_ERR_OPERATION_INVALID and not dom.isActive():
            raise InstanceNotRunning(f"instance {instance} is not running") from None
        raise


def open_graphics(conn, instance: str) -> int:
    """
    L{IHypervisor.open_graphics}: a connected socket to the domain's VNC server, past its
    authentication.
    """
    dom = lookup(conn, instance)
    if not dom.isActive():
        raise InstanceNotRunning(f"instance {instance} is not running")
    try:
        return dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
    except libvirt.libvirtError as e:
        if _error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:
            raise NoSuchInstance(instance) from None
        if is_connection_error(conn, e):
            raise
        raise GraphicsUnavailable(message(e)) from None


def open_console(conn, instance: str, on_data, on_closed, force: bool, reactor,
                 run_on_worker) -> LibvirtConsole:
    """
    L{IHypervisor.open_console}: a started L{LibvirtConsole} on the domain's serial console.

    @param reactor: the reactor the console delivers data and its end on.
    @param run_on_worker: how the console runs its libvirt calls on the worker thread.
    """
    dom = lookup(conn, instance)
    try:
        if not dom.isActive():
            raise ConsoleUnavailable(f"instance {instance} is not running")
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    except libvirt.libvirtError as e:
        if _error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:
            raise NoSuchInstance(instance) from None
        raise
    flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
    try:
        dom.openConsole(None, stream, flags)
    except libvirt.libvirtError as e:
        _abort_quietly(stream)
        if _error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:
            raise NoSuchInstance(instance) from None
        if is_connection_error(conn, e):
            raise  # the adapter reopens the connection and tries once more
        raise ConsoleUnavailable(
            f"cannot open the serial console of {instance}: {message(e)}") from None
    console = LibvirtConsole(reactor, stream, on_data, on_closed, run_on_worker)
    try:
        console.start()
    except libvirt.libvirtError as e:
        _abort_quietly(stream)
        raise ConsoleUnavailable(
            f"cannot read the serial console of {instance}: {message(e)}") from None
    return console


# -- listing and describing -----------------------------------------------------------------------


def list_active(conn, xml_flags: int) -> list[DomainInfo]:
    return [info for info in _infos(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE, xml_flags)
            if info.active]


def list_all(conn, xml_flags: int) -> list[DomainInfo]:
    return _infos(conn, 0, xml_flags)


def _infos(conn, flags, xml_flags: int) -> list[DomainInfo]:
    infos = []
    for dom in conn.listAllDomains(flags):
        try:
            infos.append(domain_info(dom, xml_flags))
        except libvirt.libvirtError as e:
            if _error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:  # undefined meanwhile
                continue
            raise
    return infos


def domain_info(dom, xml_flags: int) -> DomainInfo:
    """
    A domain's state, and for an active one its consoles, read from its XML.

    @param xml_flags: C{VIR_DOMAIN_XML_SECURE} to read VNC passwords, or 0 (they are then
        C{None}).
    """
    state = _STATES.get(dom.state()[0], DomainState.NOSTATE)
    name = dom.name()
    try:
        vnc, serial_pty = parse_domain_xml(dom.XMLDesc(xml_flags))
    except ValueError as e:
        raise HypervisorError(f"cannot read the XML of domain {name!r}: {e}") from None
    info = DomainInfo(uuid=dom.UUIDString().lower(), name=name, state=state)
    if info.active:
        info = DomainInfo(info.uuid, name, state, vnc=vnc, serial_pty=serial_pty)
    return info
