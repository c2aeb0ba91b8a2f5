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

L{ensure_event_loop<vncproxy.hypervisor.libvirt_eventloop.ensure_event_loop>} registers libvirt's
default event implementation once per process and runs that thread; it must run before the
first C{libvirt.open()} anywhere in the process (L{LibvirtHypervisor.startService} calls it; so
must any other code that opens libvirt connections, tests included).

When libvirt closes the connection (libvirtd restarted), the close callback makes the service
reopen it at once if anybody is subscribed (retrying after 1, 2, 4 ... 30 s, so that events keep
coming); otherwise the next query reopens it. Every successful open after the first attempt (a
reopening, or a first open that had failed) is announced to subscribers as a
L{LifecycleKind.RECONNECTED} event: events of the time in between were lost.

This module owns the connection (threads, opening, reopening, event callbacks); what each call
does with it, and how libvirt's errors become ours, is L{vncproxy.hypervisor.libvirt_domains}.
"""

import weakref

import libvirt
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from vncproxy.hypervisor import libvirt_domains as domains
from vncproxy.hypervisor._subscribers import Subscribers
from vncproxy.hypervisor._types import HypervisorError, LifecycleEvent, LifecycleKind
from vncproxy.hypervisor.libvirt_domains import is_alive, is_connection_error, message
from vncproxy.hypervisor.libvirt_eventloop import ensure_event_loop
from vncproxy.interfaces import IHypervisor

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

_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by us",
}

_RECONNECT_MIN_DELAY = 1.0
_RECONNECT_MAX_DELAY = 30.0

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
        return self._call(domains.describe, instance, self._xml_flags)

    def list_active(self):
        return self._call(domains.list_active, self._xml_flags)

    def list_all(self):
        return self._call(domains.list_all, self._xml_flags)

    def subscribe(self, listener):
        unsubscribe = self._listeners.add(listener)
        self._keep_connected()
        return unsubscribe

    def open_console(self, instance, on_data, on_closed, force=False):
        return self._call(self._open_console, instance, on_data, on_closed, force)

    def send_keys(self, instance, keycodes, hold_ms):
        keycodes = list(keycodes)
        return self._call(domains.on_running, instance, lambda dom: dom.sendKey(
            libvirt.VIR_KEYCODE_SET_LINUX, hold_ms, keycodes, len(keycodes), 0))

    def inject_nmi(self, instance):
        return self._call(domains.on_running, instance, lambda dom: dom.injectNMI(0))

    def open_graphics(self, instance):
        return self._call(domains.open_graphics, instance)

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
                if attempt == 1 and is_connection_error(conn, e):
                    self._log.warn(
                        "libvirt connection to {uri} failed ({error}); reopening",
                        uri=self.uri,
                        error=message(e),
                    )
                    self._disconnect()
                    continue
                raise HypervisorError(message(e)) from e

    def _connection(self) -> libvirt.virConnect:
        conn = self._conn
        if conn is not None:
            if is_alive(conn):
                return conn
            self._log.warn("libvirt connection to {uri} is dead; reopening", uri=self.uri)
            self._disconnect()
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as e:
            self._tried_before = True  # events are missed until we get through
            raise HypervisorError(
                f"cannot connect to libvirt at {self.uri}: {message(e)}"
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
                f"cannot subscribe to libvirt events at {self.uri}: {message(e)}"
            ) from e
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError as e:
            self._log.debug("no close callback for {uri}: {error}", uri=self.uri,
                            error=message(e))
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

    def _open_console(self, conn, instance, on_data, on_closed, force):
        console = domains.open_console(conn, instance, on_data, on_closed, force,
                                       self._reactor, self._run_on_worker)
        self._consoles.add(console)
        return console
