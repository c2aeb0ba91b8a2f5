"""
Audit events as journal entries with one field per audit field (systemd's native journal
protocol), through a real AF_UNIX datagram socket standing where journald's is.
"""

import socket

import pytest
from twisted.logger import Logger, LogPublisher

from vncproxy import auditjournal
from vncproxy.audit import _TEMPLATES


def parse(datagram):
    """The native protocol's fields (both the KEY=value and the binary form)."""
    fields, rest = {}, datagram
    while rest:
        line, _, rest = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
        else:
            key, size = line, int.from_bytes(rest[:8], "little")
            value, rest = rest[8:8 + size], rest[8 + size + 1:]
        fields[key.decode()] = value.decode()
    return fields


@pytest.fixture
def journal(tmp_path):
    path = str(tmp_path / "journal.socket")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    publisher = LogPublisher()
    observer = auditjournal.install({"JOURNAL_STREAM": "8:1234"}, path, publisher)
    assert auditjournal.install({"JOURNAL_STREAM": "8:1234"}, path, publisher) is observer
    yield server, Logger(namespace="consoleproxy.audit", observer=publisher), publisher
    observer.close()
    server.close()


def test_an_audit_event_is_one_entry_with_its_fields(journal):
    server, log, _ = journal
    log.info(_TEMPLATES["close"], audit="close", console_type="vnc", instance="uuid-1",
             peer="tcp4:203.0.113.7:5000", duration=12.5, bytes_to_viewer=10,
             bytes_from_viewer=2, reason="viewer closed", grant_id="abc")
    fields = parse(server.recv(65536))
    assert fields["CONSOLEPROXY_AUDIT"] == "close"
    assert fields["CONSOLEPROXY_INSTANCE"] == "uuid-1"
    assert fields["CONSOLEPROXY_PEER"] == "tcp4:203.0.113.7:5000"
    assert fields["CONSOLEPROXY_BYTES_TO_VIEWER"] == "10"
    assert fields["SYSLOG_IDENTIFIER"] == "consoleproxy-audit" and fields["PRIORITY"] == "6"
    assert fields["MESSAGE"].startswith("vnc console of uuid-1 from tcp4:203.0.113.7:5000 "
                                        "closed after 12.5s")


def test_a_value_with_a_newline_uses_the_binary_form(journal):
    server, log, _ = journal
    log.info(_TEMPLATES["refusal"], audit="refusal", peer="p", reason="two\nlines")
    assert parse(server.recv(65536))["CONSOLEPROXY_REASON"] == "two\nlines"


def test_other_events_are_not_sent(journal):
    server, _, publisher = journal
    Logger(namespace="vncproxy.vnc", observer=publisher).info("not audit {x}", x=1)
    with pytest.raises(socket.timeout):
        server.settimeout(0.2)
        server.recv(65536)


def test_not_under_systemd_or_no_journal_socket_installs_nothing(tmp_path):
    assert auditjournal.install({}, str(tmp_path / "s"), LogPublisher()) is None
    assert auditjournal.install({"JOURNAL_STREAM": "8:1"}, str(tmp_path / "missing"),
                                LogPublisher()) is None


def test_a_gone_journal_drops_the_entry_without_failing(tmp_path):
    observer = auditjournal.JournalAuditObserver(str(tmp_path / "gone"))
    observer({"log_namespace": "consoleproxy.audit", "audit": "grant", "log_format": "x"})
    assert observer.dropped == 1
    observer.close()
