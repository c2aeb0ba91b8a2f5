"""
L{SerialManager}: which domains' serial consoles are captured, from what, and when.

Capture is not tied to viewers. QEMU drops a PTY's output while nobody holds it, so the
console is opened as soon as the domain runs::

    service start        list_active() -> open every console (force: we are its reader)
    STARTED event        describe() -> open the new console (force); a new start is a new PTY
    console ends         (takeover by another client, libvirtd restart, EOF) -> after 1 s,
      by itself          2 s, ... 30 s: describe(); still running -> reopen *without* force
                         (an operator's "virsh console --force" keeps the console until they
                         leave, then capture resumes); not running -> as STOPPED
    REBOOTED event       nothing: same QEMU process, same PTY, viewers stay attached
    RECONNECTED event    (libvirtd is back) list_active() again: capture domains started
                         meanwhile; reopen lost consoles now instead of at their next retry
    STOPPED, CRASHED     close the console and every viewer (INSTANCE_STOPPED); the log and
                         the scrollback stay (the hub waits for the next start)
    UNDEFINED            as STOPPED, and the hub is dropped (the log files stay)

Where output comes from is one function, chosen by C{[serial] source}: C{libvirt}
(L{IHypervisor.open_console}: a libvirt stream, works for a non-root service) or C{pty}
(L{PtySource} on the C{/dev/pts/N} path from the domain XML: root only).

Opening, reopening and marking the gaps of one domain's console is its
L{DomainCapture<vncproxy.serial.domaincapture.DomainCapture>}'s job (generations, back-off, the
"capture stopped"/"capture resumed" lines); this module decides which domains have one, and
keeps their hubs and logs. A domain that stops is no gap: nothing is written.
"""

import fnmatch
import os

from twisted.application.service import Service
from twisted.logger import Logger

from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import ConsoleUnavailable, LifecycleKind
from vncproxy.serial.capture import ConsoleLog
from vncproxy.serial.domaincapture import DomainCapture
from vncproxy.serial.hub import HubBusy, HubFull, SerialHub
from vncproxy.serial.pty import PtySource

#: Output arriving faster than this is passed on in batches (see SerialHub.source_data): at most
#: 50 log writes and frames per viewer per second, and a keystroke's echo is never delayed.
BATCH_INTERVAL = 0.02
#: Seconds before a failed scan of the running domains is tried again.
_SCAN_RETRY = 30.0
_STOPPING = {LifecycleKind.STOPPED, LifecycleKind.CRASHED, LifecycleKind.UNDEFINED}


def has_serial_pty(info):
    """
    Whether a domain has a serial console on a PTY (C{/dev/pts/N}), the only kind we capture. A
    C{<serial type='dev'>} naming a host device (C{/dev/ttyS1}) is never touched.
    """
    # normalised: "/dev/pts/../ptmx" is not under /dev/pts
    return bool(info.serial_pty) and os.path.normpath(info.serial_pty).startswith("/dev/pts/")


def selected(name, uuid, patterns):
    """
    Whether C{[serial] domains} selects the domain named C{name} with UUID C{uuid}.
    """
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(uuid, p.lower())
               for p in patterns)


class SerialUnavailable(Exception):
    """
    A viewer cannot attach: the instance is not captured (not running, no serial console).
    """


class SerialManager(Service):
    """
    @param config: the L{vncproxy.config.Config} (C{serial_*} keys).
    @param reactor: the reactor (time; file descriptors for the C{pty} source).
    @param hypervisor: the L{IHypervisor}.
    @param open_source: C{open_source(info, on_data, on_closed, force)} returning an
        L{IConsoleSource} or a L{Deferred} of one; by default chosen by C{config.serial_source}.
    @param metrics: a L{vncproxy.metrics.Metrics} whose C{serial_bytes_captured} counts the
        output captured, or C{None}.
    """

    _log = Logger()

    def __init__(self, config, reactor, hypervisor, open_source=None, metrics=None):
        self._config = config
        self._metrics = metrics
        self._reactor = reactor
        self._hypervisor = hypervisor
        self._open_source = open_source or {
            "libvirt": self._open_libvirt,
            "pty": self._open_pty,
        }[config.serial_source]
        self._captures = {}  # uuid -> DomainCapture, for running domains
        self._hubs = {}  # uuid -> SerialHub, kept across restarts of the domain
        self._logs = {}  # uuid -> ConsoleLog
        self._unsubscribe = None
        self._initial = None

    # -- service ---------------------------------------------------------------------------------

    def startService(self):
        super().startService()
        self._unsubscribe = self._hypervisor.subscribe(self._lifecycle)
        self._scan()

    def stopService(self):
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._initial is not None and self._initial.active():
            self._initial.cancel()
        now = self._reactor.seconds()
        for capture in list(self._captures.values()):
            capture.stop_for_service(now)
        for hub in self._hubs.values():  # what is left: followers of the log
            hub.close_viewers(CloseCode.SERVICE_STOPPING)
        self._captures.clear()
        for log in self._logs.values():
            log.close()

    def _scan(self):
        self._initial = None
        d = self._hypervisor.list_active()

        def found(infos):
            for info in infos:
                if self.serves(info) and info.uuid not in self._captures:
                    self._begin(info, force=True, resuming=True)

        def failed(f):
            if not self.running:
                return
            self._log.warn("cannot list domains to capture their serial consoles ({error}); "
                           "retrying in {delay} s", error=f.getErrorMessage(), delay=_SCAN_RETRY)
            self._initial = self._reactor.callLater(_SCAN_RETRY, self._scan)

        d.addCallbacks(found, failed)
        d.addErrback(lambda f: self._log.failure("serial capture scan failed", f))

    # -- what the web layer asks -----------------------------------------------------------------

    def serves(self, info):
        """
        Whether this service captures (and serves) the serial console of the domain C{info}: it
        has a PTY and C{[serial] domains} selects it.
        """
        return has_serial_pty(info) and selected(info.name, info.uuid,
                                                 self._config.serial_domains)

    def hub(self, uuid):
        """
        The hub viewers of a captured instance attach to, or C{None} when it is not captured.
        """
        if uuid in self._captures:
            return self._hubs[uuid]
        return None

    def check_attach(self, uuid, interactive, force=False):
        """
        Refuse early (when a token is requested) what L{attach} would refuse.

        @raise SerialUnavailable: the instance is not captured.
        @raise HubBusy: an interactive session exists and C{force} is false.
        @raise HubFull: the instance has C{max_viewers} viewers.
        """
        hub = self.hub(uuid)
        if hub is None:
            raise SerialUnavailable("serial console not available")
        hub.check(interactive, force)

    def attach(self, uuid, sink, interactive, force=False, scrollback=True):
        """
        Join a viewer to the instance's hub (see L{SerialHub.join}).

        @raise SerialUnavailable: the instance is not captured.
        """
        hub = self.hub(uuid)
        if hub is None:
            raise SerialUnavailable("serial console not available")
        return hub.join(sink, interactive, force, scrollback)

    def log(self, uuid):
        """
        The L{ConsoleLog} of an instance (whether or not it runs).
        """
        log = self._logs.get(uuid)
        if log is None:
            log = ConsoleLog(self._config.serial_log_path, uuid, self._config.serial_log_size,
                             self._config.serial_log_files)
            self._logs[uuid] = log
        return log

    def clear(self, uuid):
        """
        Clear an instance's log and scrollback.
        """
        self.log(uuid).clear()
        hub = self._hubs.get(uuid)
        if hub is not None:
            hub.clear_scrollback()

    def is_captured(self, uuid):
        """
        Whether a console source is attached right now.
        """
        capture = self._captures.get(uuid)
        return capture is not None and capture.source is not None

    # -- lifecycle -------------------------------------------------------------------------------

    def _lifecycle(self, event):
        if event.kind == LifecycleKind.RECONNECTED:
            self._reconnected()
            return
        if not selected(event.name, event.uuid, self._config.serial_domains):
            return
        if event.kind == LifecycleKind.STARTED:
            self._started(event.uuid, event.name)
        elif event.kind in _STOPPING:
            self._stopped(event.uuid, undefined=event.kind == LifecycleKind.UNDEFINED)
        elif event.kind == LifecycleKind.REBOOTED:
            self._log.debug("{instance} rebooted: serial capture continues", instance=event.uuid)

    def _reconnected(self):
        """
        Events were missed while the hypervisor was unreachable: capture domains that started
        meanwhile, and reopen lost consoles now rather than at their next retry.
        """
        if not self.running:
            return
        for capture in list(self._captures.values()):
            capture.reopen_now()
        if self._initial is not None and self._initial.active():
            self._initial.cancel()
        self._scan()

    def _started(self, uuid, name):
        # Known at once, so that a viewer arriving right after the start finds the hub.
        self._capture_for(uuid, name).start()

    def _stopped(self, uuid, undefined=False):
        capture = self._captures.pop(uuid, None)
        hub = self._hubs.get(uuid)
        if capture is not None:
            capture.release()
            self._log.info("serial capture of {instance} ended: instance stopped", instance=uuid)
        if hub is not None:
            hub.close_viewers(CloseCode.INSTANCE_STOPPED)
            if undefined:
                del self._hubs[uuid]
        log = self._logs.get(uuid)
        if log is not None:
            log.close()
            if undefined:
                del self._logs[uuid]

    def _capture_for(self, uuid, name):
        if uuid not in self._hubs:
            c = self._config
            self._hubs[uuid] = SerialHub(
                uuid, self._reactor, log=self.log(uuid), scrollback=c.serial_scrollback,
                queue_limit=c.serial_viewer_queue, grace=c.serial_slow_viewer_grace,
                max_viewers=c.serial_max_viewers, batch_interval=BATCH_INTERVAL)
        capture = self._captures.get(uuid)
        if capture is None:
            capture = self._captures[uuid] = DomainCapture(self, uuid, name, self._hubs[uuid])
        return capture

    def _drop_capture(self, capture):
        """
        The domain turned out to have no console we capture: forget it (and its hub, unless
        it holds viewers or scrollback of an earlier start).
        """
        if self._captures.get(capture.uuid) is capture:
            del self._captures[capture.uuid]
        capture.release()
        hub = self._hubs.get(capture.uuid)
        if hub is not None and not hub.viewers and not hub.recent_output():
            del self._hubs[capture.uuid]

    def _begin(self, info, force, resuming=False):
        self._capture_for(info.uuid, info.name).begin(info, force, resuming)

    # -- the two sources ---------------------------------------------------------------------------

    def _open_libvirt(self, info, on_data, on_closed, force):
        return self._hypervisor.open_console(info.uuid, on_data, on_closed, force=force)

    def _open_pty(self, info, on_data, on_closed, force):
        if not self.serves(info):
            raise ConsoleUnavailable(f"{info.serial_pty} is not a PTY")
        return PtySource(self._reactor, info.serial_pty, on_data, on_closed)


__all__ = ["HubBusy", "HubFull", "SerialManager", "SerialUnavailable", "has_serial_pty"]
