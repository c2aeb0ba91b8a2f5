"""
The audit stream as systemd journal entries with one field per audit field, so that a region's
log store can select and aggregate them without parsing text (C{journalctl
CONSOLEPROXY_AUDIT=close CONSOLEPROXY_INSTANCE=...}).

Each audit event (L{vncproxy.audit}, namespace C{consoleproxy.audit}) becomes one datagram to
journald's native socket (systemd's "Native Journal Protocol"): C{MESSAGE} (the audit line),
C{PRIORITY=6}, C{SYSLOG_IDENTIFIER=consoleproxy-audit}, C{CONSOLEPROXY_AUDIT} (grant, connect,
refusal, close...) and C{CONSOLEPROXY_<FIELD>} for each of the event's fields (instance,
console_type, peer, caller, grant_id, duration, bytes_to_viewer, bytes_from_viewer, reason).
The audit never carries a secret, so neither does this.

L{install} adds the observer when the service runs under systemd (C{JOURNAL_STREAM} set) and the
socket exists; a full or missing socket drops the entry (the ordinary log line still has it),
never blocking or failing the service.
"""

import os
import socket

from twisted.logger import formatEvent, globalLogPublisher

NAMESPACE = "consoleproxy.audit"
SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "consoleproxy-audit"
#: Audit fields that become journal fields (the event's other keys are Twisted's own).
FIELDS = ("instance", "console_type", "peer", "caller", "grant_id", "duration",
          "bytes_to_viewer", "bytes_from_viewer", "reason", "client", "size")


def _field(name, value):
    data = str(value).encode("utf-8", "replace")
    key = name.encode("ascii")
    if b"\n" in data:  # the protocol's binary form: name, newline, 64-bit LE length, data
        return key + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
    return key + b"=" + data + b"\n"


def entry(event):
    """
    The native-protocol datagram for one audit event, or C{None} for any other event.
    """
    if event.get("log_namespace") != NAMESPACE or "audit" not in event:
        return None
    parts = [_field("MESSAGE", formatEvent(event)), _field("PRIORITY", 6),
             _field("SYSLOG_IDENTIFIER", IDENTIFIER),
             _field("CONSOLEPROXY_AUDIT", event["audit"])]
    for name in FIELDS:
        if event.get(name) is not None:
            parts.append(_field("CONSOLEPROXY_" + name.upper(), event[name]))
    return b"".join(parts)


class JournalAuditObserver:
    """
    A log observer sending audit events to journald's native socket at C{path}.
    """

    def __init__(self, path=SOCKET):
        self._path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self.dropped = 0

    def __call__(self, event):
        datagram = entry(event)
        if datagram is None:
            return
        try:
            self._socket.sendto(datagram, self._path)
        except OSError:
            self.dropped += 1

    def close(self):
        self._socket.close()


def install(environ=None, path=SOCKET, publisher=globalLogPublisher):
    """
    Add a L{JournalAuditObserver} to C{publisher} when running under systemd with its journal.

    @return: the observer, or C{None} when not under systemd's journal.
    """
    environ = os.environ if environ is None else environ
    if not environ.get("JOURNAL_STREAM") or not os.path.exists(path):
        return None
    if (publisher, path) in _installed:  # once per process and socket (tests build many services)
        return _installed[publisher, path]
    observer = JournalAuditObserver(path)
    publisher.addObserver(observer)
    _installed[publisher, path] = observer
    return observer


_installed = {}


__all__ = ["FIELDS", "IDENTIFIER", "JournalAuditObserver", "entry", "install"]
