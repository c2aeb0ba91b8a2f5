"""
libvirt's process-wide event loop: its default event implementation registered once, and run
in a daemon thread, so that lifecycle, reboot and close callbacks and console streams work.

L{ensure_event_loop} must run before the process's first C{libvirt.open()}: the service's
start (L{vncproxy.hypervisor.libvirt_adapter}) calls it, and so must any other code that opens
libvirt connections, tests included.
"""

import threading
import time

import libvirt
from twisted.logger import Logger

_log = Logger()

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
