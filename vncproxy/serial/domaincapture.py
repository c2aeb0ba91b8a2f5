"""
L{DomainCapture}: keeping one running domain's serial console open and attached to its hub.

::

    start()        (the domain started) describe(): running and served -> open with force;
                   stopped -> the manager ends the capture; no console -> the manager drops it
    begin(info)    (found running) open with force
    source lost    after 1 s, 2 s, ... 30 s: describe(); still running -> reopen *without*
                   force (an operator's "virsh console --force" keeps the console until they
                   leave); stopped or undefined -> the manager ends the capture
    reopen_now()   (the hypervisor is back) a lost console is retried at once
    release()      the source is detached and closed, any retry cancelled

Each open attempt carries a generation number, and every release starts a new one: results and
data of an attempt that was superseded (the domain restarted, it stopped, the capture ended)
are ignored and its source is closed.

Gaps in the log are marked with lines of our own (L{gap_marker}, written through
L{SerialHub.note<vncproxy.serial.hub.SerialHub.note>}: in the log, the scrollback and the
viewers' terminals): when the service stops while the domain runs, "capture stopped"; when
capture resumes on a domain that was already running (the console was lost while the domain
ran, or the service starts and finds it running with a log already there), "capture stopped"
(if not written yet) and "capture resumed". Times are UTC, from the reactor's clock.

Which domains are captured, their hubs and logs, and the lifecycle events are the
L{SerialManager<vncproxy.serial.manager.SerialManager>}'s.
"""

from datetime import datetime, timezone

from twisted.internet import defer
from twisted.logger import Logger

from vncproxy.hypervisor import NoSuchInstance

_RETRY_MIN = 1.0
_RETRY_MAX = 30.0


def gap_marker(what, seconds, detail=None):
    """
    The line marking one end of a gap in a serial log.

    @param what: C{"stopped"} or C{"resumed"}.
    @param seconds: when, in seconds since the epoch (the reactor's clock).
    @param detail: why capture stopped, or C{None}.
    """
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if what == "stopped":
        why = f" ({detail})" if detail else ""
        return f"[consoleproxy: serial capture stopped at {stamp}{why}]"
    return f"[consoleproxy: serial capture resumed at {stamp}; output since it stopped is missing]"


class DomainCapture:
    """
    The capture of one running domain.

    @param manager: the L{SerialManager<vncproxy.serial.manager.SerialManager>} it belongs
        to: its hypervisor, clock, source opener and metrics are used here; it is asked whether
        a domain is served, and told when the domain stopped or has no console to capture.
    @param uuid: the domain's UUID.
    @param name: the domain's name (for logs).
    @param hub: the L{SerialHub<vncproxy.serial.hub.SerialHub>} the source is attached to.

    @ivar info: the L{DomainInfo} the console is opened from.
    @ivar source: the attached L{IConsoleSource}, or C{None}.
    """

    _log = Logger()

    def __init__(self, manager, uuid, name, hub):
        self._manager = manager
        self._clock = manager._reactor
        self.uuid = uuid
        self.name = name
        self.hub = hub
        self.info = None
        self.source = None
        self.generation = 0
        self.retry = None
        self.delay = _RETRY_MIN
        self.failing = False
        # A gap to mark when a source is attached: lost_at/lost_reason when the console was lost
        # while the domain ran; resuming when the domain was found already running.
        self.lost_at = None
        self.lost_reason = None
        self.resuming = False

    def cancel_retry(self):
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None

    # -- what the manager asks -------------------------------------------------------------------

    def start(self):
        """
        The domain (re)started: describe it, then open its console with force.
        """
        self.generation += 1
        generation = self.generation
        uuid = self.uuid
        d = self._manager._hypervisor.describe(uuid)

        def described(info):
            if self.generation != generation:
                return
            if not info.active:
                self._manager._stopped(uuid)
            elif not self._manager.serves(info):
                self._log.debug("{instance} has no serial console to capture", instance=uuid)
                self._manager._drop_capture(self)
            else:
                self.begin(info, force=True)

        def failed(f):
            if self.generation != generation:
                return
            if f.check(NoSuchInstance):
                self._manager._stopped(uuid, undefined=True)
                return
            self._log.warn("cannot describe started instance {instance}: {error}",
                           instance=uuid, error=f.getErrorMessage())
            self._schedule_retry()

        d.addCallbacks(described, failed)
        d.addErrback(lambda f: self._log.failure("serial capture of {instance} failed", f,
                                                 instance=uuid))

    def begin(self, info, force, resuming=False):
        """
        Open the console of the running domain C{info}.

        @param resuming: the domain was found already running: mark the gap in its log.
        """
        self.info = info
        self.resuming = resuming
        self._open(force)

    def release(self):
        """
        Detach and close the source, cancel any retry; what is under way is ignored.
        """
        self.generation += 1
        self.cancel_retry()
        source, self.source = self.source, None
        if source is not None:
            self.hub.detach_source(source)
            source.close()

    def reopen_now(self):
        """
        A lost console waiting for its retry is retried now (events were missed meanwhile).
        """
        if self.source is None and self.retry is not None:
            self.cancel_retry()
            self.delay = _RETRY_MIN
            self._retry()

    def stop_for_service(self, now):
        """
        The service stops: release, and mark where capture stopped if the domain ran.
        """
        running = self.source is not None or self.lost_at is not None
        self.release()
        if running:
            lost = self.lost_at is not None
            self.hub.note(gap_marker("stopped", self.lost_at if lost else now,
                                     self.lost_reason if lost else "service stopping"))

    # -- opening and reopening -------------------------------------------------------------------

    def _open(self, force):
        self.release()
        generation = self.generation
        hub = self.hub
        manager = self._manager

        def current():
            return self.generation == generation

        def on_data(data):
            if current():
                if manager._metrics is not None:
                    manager._metrics.serial_bytes_captured += len(data)
                hub.source_data(data)

        def on_closed(reason):
            if not current() or self.source is None:
                return
            source, self.source = self.source, None
            hub.detach_source(source)
            if self.lost_at is None:
                self.lost_at, self.lost_reason = self._clock.seconds(), reason
            self._log.info("serial console of {instance} lost ({reason}); reopening",
                           instance=self.uuid, reason=reason)
            self.generation += 1
            self._schedule_retry()

        def opened(source):
            if not current():
                source.close()
                return
            self.source = source
            self.delay = _RETRY_MIN
            hub.attach_source(source)
            self._mark_resumed()
            if self.failing:
                self.failing = False
                self._log.info("serial capture of {instance} resumed", instance=self.uuid)
            else:
                self._log.info("capturing the serial console of {instance} ({name})",
                               instance=self.uuid, name=self.name)

        def failed(f):
            if not current():
                return
            if f.check(NoSuchInstance):
                manager._stopped(self.uuid, undefined=True)
                return
            if not self.failing:
                self.failing = True
                self._log.warn("cannot open the serial console of {instance}: {error}; "
                               "retrying", instance=self.uuid, error=f.getErrorMessage())
            self._schedule_retry()

        d = defer.maybeDeferred(manager._open_source, self.info, on_data, on_closed, force)
        d.addCallbacks(opened, failed)
        d.addErrback(lambda f: self._log.failure("serial capture of {instance} failed", f,
                                                 instance=self.uuid))

    def _mark_resumed(self):
        now = self._clock.seconds()
        if self.lost_at is not None:
            self.hub.note(gap_marker("stopped", self.lost_at, self.lost_reason) + "\r\n"
                          + gap_marker("resumed", now))
        elif self.resuming and self._manager.log(self.uuid).size() > 0:
            self.hub.note(gap_marker("resumed", now))
        self.lost_at = self.lost_reason = None
        self.resuming = False

    def _schedule_retry(self):
        if not self._manager.running:
            return
        self.cancel_retry()
        delay, self.delay = self.delay, min(self.delay * 2, _RETRY_MAX)
        self.retry = self._clock.callLater(delay, self._retry)

    def _retry(self):
        self.retry = None
        self.generation += 1
        generation = self.generation
        manager = self._manager
        d = manager._hypervisor.describe(self.uuid)

        def described(info):
            if self.generation != generation:
                return
            if not info.active:
                manager._stopped(self.uuid)
            elif not manager.serves(info):
                manager._drop_capture(self)
            else:
                self.info = info
                self._open(force=False)

        def failed(f):
            if self.generation != generation:
                return
            if f.check(NoSuchInstance):
                manager._stopped(self.uuid, undefined=True)
            else:
                self._schedule_retry()

        d.addCallbacks(described, failed)
        d.addErrback(lambda f: self._log.failure("serial capture of {instance} failed", f,
                                                 instance=self.uuid))
