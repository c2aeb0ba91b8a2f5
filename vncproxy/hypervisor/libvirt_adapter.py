"""
L{IHypervisor} against libvirt (libvirt-python).

Three threads are involved::

    reactor thread     public methods, the listener table, delivery of events to listeners
        |  deferToThreadPool                     ^  callFromThread (results, events)
        v                                        |
    worker thread      every blocking libvirt call; owns the connection: opened on first use,
    (one per service)  reopened when found dead, callbacks re-registered on every open
                                                 ^
    libvirt event      process-wide daemon thread looping virEventRunDefaultImpl(); libvirt
    loop thread        calls our lifecycle/reboot/close callbacks here, which only build a
                       LifecycleEvent and hand it to the reactor

L{ensure_event_loop} registers libvirt's default event implementation once per process; it must
run before the first C{libvirt.open()} anywhere in the process (L{LibvirtHypervisor.startService}
calls it; so must any other code that opens libvirt connections, tests included).

When libvirt closes the connection (libvirtd restarted), the close callback makes the service
reopen it at once if anybody is subscribed (retrying after 1, 2, 4 ... 30 s, so that events keep
coming); otherwise the next query reopens it. Every successful open after the first attempt (a
reopening, or a first open that had failed) is announced to subscribers as a
L{LifecycleKind.RECONNECTED} event: events of the time in between were lost.
"""

import threading
import time
import weakref

import libvirt
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from vncproxy.hypervisor._subscribers import Subscribers
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
)
from vncproxy.hypervisor.domxml import canonical_uuid, parse_domain_xml
from vncproxy.hypervisor.libvirt_console import LibvirtConsole
from vncproxy.interfaces import IHypervisor

_log = Logger()

# VIR_DOMAIN_EVENT_* (the lifecycle event number is the index).
_LIFECYCLE_KINDS = (
    LifecycleKind.DEFINED,
    LifecycleKind.UNDEFINED,
    LifecycleKind.STARTED,
    LifecycleKind.SUSPENDED,
    LifecycleKind.RESUMED,
    LifecycleKind.STOPPED,
    LifecycleKind.SHUTDOWN,
    LifecycleKind.PMSUSPENDED,
    LifecycleKind.CRASHED,
)

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

_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by us",
}

_RECONNECT_MIN_DELAY = 1.0
_RECONNECT_MAX_DELAY = 30.0

_event_loop_lock = threading.Lock()
_event_loop_thread: threading.Thread | None = None


def ensure_event_loop() -> None:
    """
    Once per process: register libvirt's default event loop implementation and run it in a
    daemon thread. Must be called before the process's first C{libvirt.open()}.

    Also replaces libvirt's default error handler (which prints every error to stderr) with one
    that ignores them: errors still reach the caller as C{libvirtError}.
    """
    global _event_loop_thread
    with _event_loop_lock:
        if _event_loop_thread is not None:
            return
        libvirt.registerErrorHandler(_ignore_error, None)
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(
            target=_run_event_loop, name="libvirt-event-loop", daemon=True
        )
        thread.start()
        _event_loop_thread = thread


def _ignore_error(ctx, error):
    pass


def _run_event_loop():
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:
            _log.failure("libvirt event loop iteration failed")
            time.sleep(0.1)


def _error_code(e: libvirt.libvirtError) -> int | None:
    return e.get_error_code()


def _is_alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _is_connection_error(conn: libvirt.virConnect, e: libvirt.libvirtError) -> bool:
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
        ) or not _is_alive(conn)
    return False


def _message(e: libvirt.libvirtError) -> str:
    return e.get_error_message() or str(e)


@implementer(IHypervisor)
class LibvirtHypervisor(Service):
    """
    Domains, their consoles and their lifecycle events, read from libvirt at C{uri}.

    Start the service before querying (queries on a stopped service fail with
    L{HypervisorError}); stopping it closes the connection and ends its worker thread (wait for
    the L{Deferred} from C{stopService} before starting it again).

    Consoles (C{vnc}, C{serial_pty}) are only reported for active domains: an inactive domain's
    XML may still name a fixed port or a device path, but nothing listens there.

    Events reach a new subscriber once the connection is open: L{subscribe} opens it if needed,
    and any query that completes after L{subscribe} returned guarantees it.
    """

    _log = Logger()

    def __init__(self, reactor, uri: str = "qemu:///system", read_secrets: bool = True):
        self._reactor = reactor
        self.uri = uri
        # Without it, domain XML is read without its secrets (VNC passwords are then None):
        # for [vnc] connect = graphics-fd, which needs no password and no read-secure right.
        self._xml_flags = libvirt.VIR_DOMAIN_XML_SECURE if read_secrets else 0
        self._pool: ThreadPool | None = None
        self._listeners = Subscribers()
        self._reconnect_call = None
        self._reconnect_delay = _RECONNECT_MIN_DELAY
        self._lost_at = None  # reactor time the close callback reported the connection lost
        # Touched only on the worker thread (or before it runs):
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._tried_before = False
        self._consoles = weakref.WeakSet()  # console streams on the current connection

    # -- service ----------------------------------------------------------------------------

    def startService(self):
        ensure_event_loop()
        self._tried_before = False
        self._pool = ThreadPool(1, 1, name=f"libvirt {self.uri}")
        self._pool.start()
        Service.startService(self)
        self._log.info("libvirt hypervisor for {uri} started", uri=self.uri)
        if self._listeners:
            self._keep_connected()

    def stopService(self):
        Service.stopService(self)
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        pool, self._pool = self._pool, None
        if pool is None:
            return defer.succeed(None)
        d = deferToThreadPool(self._reactor, pool, self._disconnect)
        d.addErrback(
            lambda f: self._log.failure(
                "closing the libvirt connection to {uri} failed", f, uri=self.uri
            )
        )

        def stopped(_):
            pool.stop()
            self._log.info("libvirt hypervisor for {uri} stopped", uri=self.uri)

        d.addCallback(stopped)
        return d

    # -- IHypervisor --------------------------------------------------------------------------

    def describe(self, instance):
        return self._call(self._describe, instance)

    def list_active(self):
        return self._call(self._list_active)

    def list_all(self):
        return self._call(self._list_all)

    def subscribe(self, listener):
        unsubscribe = self._listeners.add(listener)
        self._keep_connected()
        return unsubscribe

    def open_console(self, instance, on_data, on_closed, force=False):
        return self._call(self._open_console, instance, on_data, on_closed, force)

    def send_keys(self, instance, keycodes, hold_ms):
        keycodes = list(keycodes)
        return self._call(self._on_running, instance, lambda dom: dom.sendKey(
            libvirt.VIR_KEYCODE_SET_LINUX, hold_ms, keycodes, len(keycodes), 0))

    def inject_nmi(self, instance):
        return self._call(self._on_running, instance, lambda dom: dom.injectNMI(0))

    def open_graphics(self, instance):
        return self._call(self._open_graphics, instance)

    def ping(self):
        d = self._call(lambda conn: conn.getLibVersion())

        def down(f):
            self._log.debug("libvirt at {uri} does not answer: {error}", uri=self.uri,
                            error=f.getErrorMessage())
            return False

        d.addCallbacks(lambda _: True, down)
        return d

    # -- reactor thread -------------------------------------------------------------------------

    def _call(self, f, *args):
        """
        Run C{f(conn, *args)} on the worker thread with an open connection.
        """
        if self._pool is None:
            return defer.fail(
                HypervisorError(f"the libvirt hypervisor for {self.uri} is not running")
            )
        return deferToThreadPool(self._reactor, self._pool, self._with_connection, f, *args)

    def _run_on_worker(self, f):
        """
        Run C{f()} on the worker thread without touching the connection; C{None} when stopped.
        """
        if self._pool is None:
            return None
        return deferToThreadPool(self._reactor, self._pool, f)

    def _deliver(self, event: LifecycleEvent) -> None:
        if self.running:
            self._listeners.deliver(event)

    def _keep_connected(self) -> None:
        """
        Make sure the connection is open while anybody listens for events; retry later if
        libvirt cannot be reached.
        """
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        if self._pool is None or not self._listeners:
            return

        def connected(_):
            self._reconnect_delay = _RECONNECT_MIN_DELAY

        def failed(f):
            f.trap(HypervisorError)
            if self._pool is None or (
                self._reconnect_call is not None and self._reconnect_call.active()
            ):
                return
            delay = self._reconnect_delay
            self._reconnect_delay = min(delay * 2, _RECONNECT_MAX_DELAY)
            self._log.warn(
                "{error}; retrying in {delay} s",
                uri=self.uri,
                error=f.getErrorMessage(),
                delay=delay,
            )
            self._reconnect_call = self._reactor.callLater(delay, self._keep_connected)

        d = self._call(lambda conn: None)
        d.addCallbacks(connected, failed)
        d.addErrback(
            lambda f: self._log.failure("keeping the libvirt connection open failed", f)
        )

    def _connection_closed(self, reason: int) -> None:
        if reason == libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT or not self.running:
            return
        self._log.warn(
            "libvirt closed the connection to {uri} ({reason})",
            uri=self.uri,
            reason=_CLOSE_REASONS.get(reason, reason),
        )
        if self._lost_at is None:
            self._lost_at = self._reactor.seconds()
        self._keep_connected()

    def _reconnected(self) -> None:
        lost_at, self._lost_at = self._lost_at, None
        if not self.running:
            return
        if lost_at is None:
            self._log.info("libvirt connection to {uri} reopened; lifecycle events resume",
                           uri=self.uri)
        else:
            self._log.info("libvirt connection to {uri} back after {outage:.1f} s; lifecycle "
                           "events resume", uri=self.uri,
                           outage=self._reactor.seconds() - lost_at)
        self._deliver(LifecycleEvent("", "", LifecycleKind.RECONNECTED))

    # -- libvirt event loop thread --------------------------------------------------------------

    def _on_lifecycle(self, conn, dom, event, detail, opaque):
        if not 0 <= event < len(_LIFECYCLE_KINDS):
            self._log.debug("ignoring unknown libvirt lifecycle event {event}", event=event)
            return
        self._post(dom, _LIFECYCLE_KINDS[event], detail)

    def _on_reboot(self, conn, dom, opaque):
        self._post(dom, LifecycleKind.REBOOTED, 0)

    def _post(self, dom, kind: LifecycleKind, detail: int) -> None:
        try:
            # Both are read from the virDomain object itself: no call to libvirtd.
            event = LifecycleEvent(dom.UUIDString().lower(), dom.name(), kind, detail)
            self._reactor.callFromThread(self._deliver, event)
        except Exception:
            self._log.failure("could not pass on a libvirt {kind} event", kind=kind)

    def _on_close(self, conn, reason, opaque):
        self._reactor.callFromThread(self._connection_closed, reason)

    # -- worker thread --------------------------------------------------------------------------

    def _with_connection(self, f, *args):
        for attempt in (1, 2):
            conn = self._connection()
            try:
                return f(conn, *args)
            except libvirt.libvirtError as e:
                if attempt == 1 and _is_connection_error(conn, e):
                    self._log.warn(
                        "libvirt connection to {uri} failed ({error}); reopening",
                        uri=self.uri,
                        error=_message(e),
                    )
                    self._disconnect()
                    continue
                raise HypervisorError(_message(e)) from e

    def _connection(self) -> libvirt.virConnect:
        conn = self._conn
        if conn is not None:
            if _is_alive(conn):
                return conn
            self._log.warn("libvirt connection to {uri} is dead; reopening", uri=self.uri)
            self._disconnect()
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as e:
            self._tried_before = True  # events are missed until we get through
            raise HypervisorError(
                f"cannot connect to libvirt at {self.uri}: {_message(e)}"
            ) from e
        try:
            ids = [
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
                ),
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot, None
                ),
            ]
        except libvirt.libvirtError as e:
            self._close_quietly(conn)
            raise HypervisorError(
                f"cannot subscribe to libvirt events at {self.uri}: {_message(e)}"
            ) from e
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError as e:
            self._log.debug("no close callback for {uri}: {error}", uri=self.uri,
                            error=_message(e))
        self._conn, self._callback_ids = conn, ids
        self._log.info("connected to libvirt at {uri}", uri=self.uri)
        if self._tried_before:
            self._reactor.callFromThread(self._reconnected)
        self._tried_before = True
        return conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        ids, self._callback_ids = self._callback_ids, []
        consoles, self._consoles = list(self._consoles), weakref.WeakSet()
        for console in consoles:
            console.connection_lost("libvirt connection closed")
        if conn is None:
            return
        for callback_id in ids:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except (libvirt.libvirtError, KeyError):
                pass
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        self._close_quietly(conn)

    @staticmethod
    def _close_quietly(conn) -> None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    def _lookup(self, conn, instance: str):
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

    def _describe(self, conn, instance: str) -> DomainInfo:
        dom = self._lookup(conn, instance)
        try:
            return self._info(dom)
        except libvirt.libvirtError as e:
            if _error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:  # undefined meanwhile
                raise NoSuchInstance(instance) from None
            raise

    def _on_running(self, conn, instance: str, action) -> None:
        """
        Run C{action(dom)} on a running domain: a stopped one is L{InstanceNotRunning}.
        """
        dom = self._lookup(conn, instance)
        try:
            action(dom)
        except libvirt.libvirtError as e:
            code = _error_code(e)
            if code == libvirt.VIR_ERR_NO_DOMAIN:  # undefined meanwhile
                raise NoSuchInstance(instance) from None
            if code == libvirt.VIR_ERR_OPERATION_INVALID and not dom.isActive():
                raise InstanceNotRunning(f"instance {instance} is not running") from None
            raise

    def _open_graphics(self, conn, instance: str) -> int:
        dom = self._lookup(conn, instance)
        if not dom.isActive():
            raise InstanceNotRunning(f"instance {instance} is not running")
        try:
            return dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
        except libvirt.libvirtError as e:
            if _error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:
                raise NoSuchInstance(instance) from None
            if _is_connection_error(conn, e):
                raise
            raise GraphicsUnavailable(_message(e)) from None

    def _open_console(self, conn, instance: str, on_data, on_closed, force: bool):
        dom = self._lookup(conn, instance)
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
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass
            if _error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:
                raise NoSuchInstance(instance) from None
            if _is_connection_error(conn, e):
                raise  # _with_connection reopens the connection and tries once more
            raise ConsoleUnavailable(
                f"cannot open the serial console of {instance}: {_message(e)}") from None
        console = LibvirtConsole(self._reactor, stream, on_data, on_closed, self._run_on_worker)
        try:
            console.start()
        except libvirt.libvirtError as e:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass
            raise ConsoleUnavailable(
                f"cannot read the serial console of {instance}: {_message(e)}") from None
        self._consoles.add(console)
        return console

    def _list_active(self, conn) -> list[DomainInfo]:
        return [info for info in self._infos(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                if info.active]

    def _list_all(self, conn) -> list[DomainInfo]:
        return self._infos(conn, 0)

    def _infos(self, conn, flags) -> list[DomainInfo]:
        infos = []
        for dom in conn.listAllDomains(flags):
            try:
                infos.append(self._info(dom))
            except libvirt.libvirtError as e:
                if _error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:  # undefined meanwhile
                    continue
                raise
        return infos

    def _info(self, dom) -> DomainInfo:
        state = _STATES.get(dom.state()[0], DomainState.NOSTATE)
        name = dom.name()
        try:
            vnc, serial_pty = parse_domain_xml(dom.XMLDesc(self._xml_flags))
        except ValueError as e:
            raise HypervisorError(f"cannot read the XML of domain {name!r}: {e}") from None
        info = DomainInfo(uuid=dom.UUIDString().lower(), name=name, state=state)
        if info.active:
            info = DomainInfo(info.uuid, name, state, vnc=vnc, serial_pty=serial_pty)
        return info
