"""
The LXD console API's pieces on a test clock: envelopes, operations and their secrets, the
console operation's states (with a real serial hub), trusted certificates, the [lxd] settings.
"""

import hashlib
import os
import socket

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.ssl import Certificate
from twisted.internet.testing import MemoryReactorClock, StringTransport

from tests.support import pki
from vncproxy import config
from vncproxy.closecodes import CloseCode
from vncproxy.context import ProxyContext
from vncproxy.hypervisor import DomainInfo, DomainState
from vncproxy.lxd import envelope
from vncproxy.lxd.console import ConsoleOperation
from vncproxy.lxd.operations import OperationStore, SecretRejected, Status, event
from vncproxy.lxd.trust import (
    CertificateCredential,
    SocketCredential,
    TrustedCertificates,
    fingerprint,
)
from vncproxy.metrics import Metrics
from vncproxy.serial.hub import SerialHub
from vncproxy.sessions import SessionRegistry
from vncproxy.tokens import TokenStore

UUID = "0c3a0a6e-8f57-4c43-9c0b-5d4f1e0d2b11"
INFO = DomainInfo(UUID, "ser1", DomainState.RUNNING, serial_pty="/dev/pts/9")


# -- envelopes ---------------------------------------------------------------------------------

def test_sync_async_and_error_envelopes_have_lxds_fields():
    """The three envelopes carry the fields LXD's Go client and pylxd read."""
    assert envelope.sync({"a": 1}) == {
        "type": "sync", "status": "Success", "status_code": 200, "operation": "",
        "error_code": 0, "error": "", "metadata": {"a": 1}}
    created = envelope.async_({"id": "abc"})
    assert created["type"] == "async" and created["status_code"] == 100
    assert created["operation"] == "/1.0/operations/abc"
    assert envelope.error(403, "not authorized") == {
        "type": "error", "status": "", "status_code": 0, "operation": "", "error_code": 403,
        "error": "not authorized", "metadata": None}


def test_server_document_says_trusted_or_not():
    """lxc remote add reads auth and auth_methods; lxc needs the instances and console
    extensions; an untrusted caller learns nothing else."""
    trusted = envelope.server_document(trusted=True)
    assert trusted["auth"] == "trusted" and trusted["auth_methods"] == ["tls"]
    assert {"instances", "console"} <= set(trusted["api_extensions"])
    untrusted = envelope.server_document(trusted=False)
    assert untrusted["auth"] == "untrusted" and "environment" not in untrusted


def test_instance_document_and_timestamps():
    """A running domain is a Running virtual-machine; times are RFC 3339 as Go reads them."""
    doc = envelope.instance_document(INFO, 0.5)
    assert (doc["name"], doc["type"], doc["status"], doc["status_code"]) == (
        "ser1", "virtual-machine", "Running", 103)
    assert doc["created_at"] == "1970-01-01T00:00:00.500000Z"
    stopped = envelope.instance_document(DomainInfo(UUID, "ser1", DomainState.SHUTOFF), 0)
    assert (stopped["status"], stopped["status_code"]) == ("Stopped", 102)


# -- operations and secrets -------------------------------------------------------------------

def make_store(ttl=30.0):
    clock = MemoryReactorClock()
    store = OperationStore(clock, ttl, keep=60.0)
    seen = []
    store.subscribe(lambda op: seen.append((op.id, op.status)))
    return clock, store, seen


def test_secrets_are_256_bits_distinct_and_kept_hashed():
    """Each channel gets 256 random bits; the store keeps only their SHA-256."""
    clock, store, _ = make_store()
    operation, secrets = store.create("ser1", "key-1")
    assert set(secrets) == {"0", "control"}
    assert all(len(bytes.fromhex(s)) == 32 for s in secrets.values())
    assert secrets["0"] != secrets["control"]
    kept = repr(vars(operation)) + repr(vars(store))
    assert secrets["0"] not in kept and secrets["control"] not in kept
    assert hashlib.sha256(secrets["0"].encode()).digest() in operation._digests
    assert "fds" not in repr(operation.document())
    assert operation.document(fds=secrets)["metadata"]["fds"] == secrets


def test_a_secret_opens_its_channel_once():
    """Redeeming names the channel; the same secret again, a wrong one or another
    operation's id is refused."""
    clock, store, _ = make_store()
    operation, secrets = store.create("ser1", "key-1")
    assert store.redeem(operation.id, secrets["control"]) == (operation, "control")
    with pytest.raises(SecretRejected):
        store.redeem(operation.id, secrets["control"])
    with pytest.raises(SecretRejected):
        store.redeem(operation.id, "0" * 64)
    with pytest.raises(SecretRejected):
        store.redeem("other", secrets["0"])
    with pytest.raises(SecretRejected):
        store.redeem(operation.id, None)
    assert store.redeem(operation.id, secrets["0"]) == (operation, "0")


def test_secrets_expire_after_ttl_and_with_the_operation():
    """After ttl seconds, or once the operation ended, no secret works."""
    clock, store, _ = make_store(ttl=10)
    late, late_secrets = store.create("ser1", "key-1")
    clock.advance(10)
    with pytest.raises(SecretRejected):
        store.redeem(late.id, late_secrets["0"])
    ended, ended_secrets = store.create("ser1", "key-1")
    store.finish(ended)
    with pytest.raises(SecretRejected):
        store.redeem(ended.id, ended_secrets["0"])


def test_finish_sends_events_and_the_operation_is_forgotten_later():
    """Creation and the end are events (once); a finished operation stays readable for
    `keep` seconds."""
    clock, store, seen = make_store()
    operation, _ = store.create("ser1", "key-1")
    clock.advance(2)
    store.finish(operation, "taken over")
    store.finish(operation)
    assert seen == [(operation.id, Status.RUNNING), (operation.id, Status.FAILURE)]
    document = operation.document()
    assert (document["status"], document["status_code"], document["err"]) == (
        "Failure", 400, "taken over")
    message = event(operation, clock.seconds())
    assert message["type"] == "operation" and message["metadata"]["id"] == operation.id
    clock.advance(59)
    assert store.get(operation.id) is operation
    clock.advance(1)
    assert store.get(operation.id) is None and len(store) == 0


# -- the console operation ---------------------------------------------------------------------

class FakeChannel:
    """What ConsoleOperation and the session drive of a channel's WebSocket protocol."""

    STATE_OPEN = WebSocketServerProtocol.STATE_OPEN

    def __init__(self):
        self.state = self.STATE_OPEN
        self.closed = None
        self.sent = []
        self.transport = StringTransport()
        self.factory = self
        self._session = None
        self._operation = None

    def sendClose(self, code, reason):
        self.closed = (code, reason)
        self.state = WebSocketServerProtocol.STATE_CLOSING

    def prepareMessage(self, data, isBinary):
        return data

    def sendPreparedMessage(self, data):
        self.sent.append(data)


class FakeSerial:
    def __init__(self, hub):
        self.hub = hub

    def attach(self, uuid, sink, interactive, force=False):
        return self.hub.join(sink, interactive, force)


def make_console(ttl=30.0, idle=600.0, force=False):
    reactor = MemoryReactorClock()
    cfg = config.defaults(idle_timeout=idle)
    tokens, sessions = TokenStore(reactor, 180), SessionRegistry(2)
    hub = SerialHub(UUID, reactor, scrollback=1024)
    ctx = ProxyContext(config=cfg, reactor=reactor, hypervisor=None, tokens=tokens,
                       sessions=sessions, serial=FakeSerial(hub), metrics=Metrics(tokens, sessions))
    store = OperationStore(reactor, ttl)
    operation, _ = store.create("ser1", "key-1")
    return reactor, hub, store, ConsoleOperation(ctx, store, operation, INFO, force), sessions


def test_nobody_attaching_fails_the_operation_after_ttl():
    """A control channel alone does not hold the console: after ttl the operation fails and
    the channel is closed."""
    reactor, hub, store, console, _ = make_console(ttl=5)
    control = FakeChannel()
    console.open("control", control, "peer").register()
    reactor.advance(5)
    assert console.operation.status is Status.FAILURE
    assert console.operation.error == "timed out waiting for the console WebSocket"
    assert control.closed[0] == 1000


def test_console_channel_is_the_writer_with_scrollback_then_detach_succeeds():
    """Attaching "0" joins the hub as its writer and sends the scrollback; closing control
    (ctrl+a q) leaves the hub, closes "0" and the operation succeeds."""
    reactor, hub, store, console, sessions = make_console()
    hub.source_data(b"earlier output\r\n")
    control, data = FakeChannel(), FakeChannel()
    console.open("control", control, "peer").register()
    console.open("0", data, "peer").register()
    console.opened("0")
    assert hub.writer is not None and data.sent == [b"earlier output\r\n"]
    assert sessions.count(UUID, "serial") == 1
    console.channel_closed("control")
    assert hub.writer is None and sessions.count(UUID, "serial") == 0
    assert data.closed == (1000, "Detaching from console")
    assert console.operation.status is Status.SUCCESS


def test_takeover_closes_the_console_channel_with_4004_and_fails_the_operation():
    """A forced session elsewhere closes "0" with TAKEN_OVER and control normally; the
    operation fails with the reason."""
    reactor, hub, store, console, _ = make_console()
    control, data = FakeChannel(), FakeChannel()
    console.open("control", control, "peer").register()
    console.open("0", data, "peer").register()
    console.opened("0")

    class Sink:
        network_transport = None

        def send(self, chunk):
            pass

        def close(self, code, detail=None):
            pass

    hub.join(Sink(), interactive=True, force=True)
    assert data.closed[0] == CloseCode.TAKEN_OVER
    assert control.closed[0] == 1000
    assert console.operation.status is Status.FAILURE and "taken over" in console.operation.error


def test_idle_timer_closes_the_console():
    """No traffic for idle_timeout: 4005, the operation fails."""
    reactor, hub, store, console, _ = make_console(idle=5)
    data = FakeChannel()
    console.open("0", data, "peer").register()
    console.opened("0")
    reactor.advance(5)
    assert data.closed[0] == CloseCode.IDLE_TIMEOUT
    assert console.operation.status is Status.FAILURE


# -- trust ---------------------------------------------------------------------------------------

def test_trusted_certificates_from_a_directory_or_a_file(tmp_path):
    """Every certificate of every *.crt/*.pem in the directory counts (or of the one file);
    other files are ignored and a broken one does not hide the rest."""
    ca = pki.make_ca()
    alice, bob = pki.issue(ca, "alice", client=True), pki.issue(ca, "bob", client=True)
    alice.write(tmp_path / "alice.crt")
    (tmp_path / "both.pem").write_bytes(alice.cert_pem + bob.cert_pem)
    (tmp_path / "notes.txt").write_bytes(ca.cert_pem)
    (tmp_path / "broken.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nxx\n"
                                          b"-----END CERTIFICATE-----\n")
    expected = {fingerprint(Certificate.loadPEM(c.cert_pem).original) for c in (alice, bob)}
    assert TrustedCertificates(str(tmp_path)).fingerprints() == expected
    single = TrustedCertificates(str(tmp_path / "alice.crt")).fingerprints()
    assert single == {fingerprint(Certificate.loadPEM(alice.cert_pem).original)}
    assert len(next(iter(single))) == 64


def test_certificate_credential_names_only_trusted_clients(tmp_path):
    """A listed client certificate gets a label; an unknown one or none gets None."""
    ca = pki.make_ca()
    alice, mallory = pki.issue(ca, "alice", client=True), pki.issue(ca, "mallory", client=True)
    alice.write(tmp_path / "alice.crt")
    credential = CertificateCredential(TrustedCertificates(str(tmp_path)))

    class Transport:
        def __init__(self, issued):
            self.issued = issued

        def getPeerCertificate(self):
            return Certificate.loadPEM(self.issued.cert_pem).original if self.issued else None

    label = credential.identify(Transport(alice), lambda name: None)
    assert label.startswith("cert-") and len(label) == 17
    assert credential.identify(Transport(mallory), lambda name: None) is None
    assert credential.identify(Transport(None), lambda name: None) is None


def test_socket_credential_names_the_peer_uid():
    """On the UNIX socket the caller is its peer's uid (SO_PEERCRED)."""
    left, right = socket.socketpair()
    try:
        class Transport:
            def getHandle(self):
                return left

        assert SocketCredential().identify(Transport(), None) == f"unix-uid-{os.getuid()}"
    finally:
        left.close()
        right.close()


# -- settings ------------------------------------------------------------------------------------

def test_lxd_settings_are_checked(tmp_path):
    """listen takes unix: only, listen_tls ssl: only and needs trusted certificates; the
    socket mode is octal."""
    server = pki.issue(pki.make_ca(), "server", names=["localhost"])
    server.write(tmp_path / "s.crt", tmp_path / "s.key")
    tls = f"ssl:8443:privateKey={tmp_path / 's.key'}:certKey={tmp_path / 's.crt'}"
    good = config.from_string("[lxd]\nlisten = unix:/run/x.sock\nsocket_mode = 0640\n")
    assert good.lxd_listen == "unix:/run/x.sock" and good.lxd_socket_mode == 0o640
    for text, where in [("listen = tcp:8443", "listen"),
                        ("listen_tls = tcp:8443", "listen_tls"),
                        ("socket_mode = rw", "socket_mode"),
                        (f"listen_tls = {tls}", "trusted_certificates")]:
        with pytest.raises(config.ConfigError, match=where):
            config.from_string(f"[lxd]\n{text}\n")


def test_socket_gets_its_group_and_mode(tmp_path):
    """Once listening, the socket is given the configured group and mode (the owner stays the
    service's when none is set)."""
    import grp

    from vncproxy.lxd.trust import UnixSocketService

    # root may give it to any group, anyone else to a group of theirs
    group = "nogroup" if os.getuid() == 0 else grp.getgrgid(os.getgid()).gr_name
    path = tmp_path / "lxd.sock"
    path.write_bytes(b"")
    service = UnixSocketService(MemoryReactorClock(), f"unix:{path}", object(), owner="",
                                group=group, mode=0o640)
    assert service.path == str(path)
    port = object()
    assert service._apply_ownership(port) is port
    st = os.stat(path)
    assert (st.st_mode & 0o777, st.st_gid, st.st_uid) == (
        0o640, grp.getgrnam(group).gr_gid, os.getuid())


def test_only_the_creator_may_use_the_secrets():
    """Someone else is refused without spending the secret; strictly (socket, certificate)
    nobody but the creator gets in, otherwise a connection naming nobody needs the secret
    only."""
    from vncproxy.lxd.operations import RequestorMismatch

    clock, store, _ = make_store()
    operation, secrets = store.create("ser1", "cert-alice")
    with pytest.raises(RequestorMismatch):
        store.redeem(operation.id, secrets["0"], "cert-mallory", strict=True)
    with pytest.raises(RequestorMismatch):
        store.redeem(operation.id, secrets["0"], None, strict=True)
    with pytest.raises(RequestorMismatch):
        store.redeem(operation.id, secrets["0"], "key-other")
    assert store.redeem(operation.id, secrets["0"], "cert-alice", strict=True)[1] == "0"
    assert store.redeem(operation.id, secrets["control"], None)[1] == "control"


def test_lxd_family_renders_lxds_envelope_with_the_close_code():
    """Once vncproxy.lxd.envelope is imported, errors of the lxd family (the /1.0 routes, the
    site's early refusals there) are LXD's envelope, with the refusal's close code if any."""
    from vncproxy.web.errors import ApiError, error_document, error_message

    _, body = error_document(ApiError(409, "busy", CloseCode.LIMIT_REACHED), envelope.FAMILY)
    assert body["type"] == "error" and body["error_code"] == 409 and body["error"] == "busy"
    assert body["close_code"] == 4003
    assert error_message(body) == (409, "busy")
