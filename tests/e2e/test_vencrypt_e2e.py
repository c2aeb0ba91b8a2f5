"""
End to end, VeNCrypt: the proxy in front of a real QEMU VNC server that requires TLS.

QEMU runs directly (tests/support/qemuvnc.py), not through libvirt, so the shared libvirtd's
configuration stays untouched; the proxy runs in-process with a fake hypervisor that points
at it. The PKI (a CA, QEMU's server certificate for 127.0.0.1, a client certificate, and a
second, unrelated CA) is made by the test. A viewer opens the console over the WebSocket
listener and must reach QEMU's ServerInit through TLS, or be refused with a clear reason.
"""

import os

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from tests.support import api
from tests.support.pki import issue, make_ca
from tests.support.ports import free_port
from tests.support.qemuvnc import QemuVnc, qemu_binary
from tests.support.viewer import RfbRefused, RfbViewer, WebSocketPipe, open_websocket
from vncproxy import config
from vncproxy.hypervisor import VncEndpoint
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.service import ConsoleProxyService

API_KEY = "vencrypt-e2e-key-0123456789abcdef"
PASSWORD = "secret1"
in_thread = threads.deferToThread


@pytest.fixture(scope="module")
def qemu_available():
    if qemu_binary() is None:
        if os.environ.get("CONSOLEPROXY_REQUIRE_E2E", "").lower() in ("1", "true", "yes"):
            pytest.fail("CONSOLEPROXY_REQUIRE_E2E is set but there is no QEMU", pytrace=False)
        pytest.skip("no qemu-system-x86_64; run tools/testbed.sh up")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """CA, server cert for 127.0.0.1 (QEMU's layout), client cert, and a foreign CA."""
    base = tmp_path_factory.mktemp("pki")
    ca = make_ca("consoleproxy e2e CA")
    qemu_dir = base / "qemu"
    qemu_dir.mkdir()
    ca.write(qemu_dir / "ca-cert.pem")
    issue(ca, "127.0.0.1", ["127.0.0.1", "vnc.example.test"]).write(
        qemu_dir / "server-cert.pem", qemu_dir / "server-key.pem")
    ca.write(base / "ca.pem")
    issue(ca, "consoleproxy", client=True).write(base / "client-cert.pem", base / "client-key.pem")
    make_ca("some other CA").write(base / "other-ca.pem")
    return base


@pytest.fixture(scope="module")
def qemu_x509vnc(qemu_available, pki, tmp_path_factory):
    q = QemuVnc(tmp_path_factory.mktemp("qemu-x509vnc"), tls="x509", pki_dir=pki / "qemu",
                password=PASSWORD).start()
    yield q
    q.stop()


@pytest.fixture(scope="module")
def qemu_verify_peer(qemu_available, pki, tmp_path_factory):
    q = QemuVnc(tmp_path_factory.mktemp("qemu-verify"), tls="x509", pki_dir=pki / "qemu",
                verify_peer=True).start()
    yield q
    q.stop()


@pytest.fixture(scope="module")
def qemu_anonymous(qemu_available, tmp_path_factory):
    q = QemuVnc(tmp_path_factory.mktemp("qemu-anon"), tls="anonymous", password=PASSWORD).start()
    yield q
    q.stop()


class InProcessProxy:
    def __init__(self, qemu, **changes):
        self.hypervisor = FakeHypervisor()
        self.hypervisor.add_domain("vm1", vnc=VncEndpoint(host="127.0.0.1", port=qemu.port,
                                                          password=qemu.password))
        api_port, console_port = free_port(), free_port()
        cfg = config.defaults(api_listen=f"tcp:{api_port}:interface=127.0.0.1",
                              console_listen=f"tcp:{console_port}:interface=127.0.0.1",
                              xvpvnc_listen=f"tcp:{free_port()}:interface=127.0.0.1",
                              vnc_listen=f"tcp:{free_port()}:interface=127.0.0.1",
                              vnc_handshake_timeout=10.0, **changes)
        self.service = ConsoleProxyService(cfg, reactor, self.hypervisor, [API_KEY])
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.ws_url = f"ws://127.0.0.1:{console_port}"

    def open_console(self, version=(3, 8)):
        """Blocking: grant a token, open the WebSocket, run the RFB handshake."""
        status, body = api.grant(self.api_url, API_KEY, "vm1")
        assert status == 200, body
        ws = open_websocket(body["href"].replace(self.service.ctx.config.websocket_base_url,
                                                 self.ws_url))
        try:
            return RfbViewer(WebSocketPipe(ws)).handshake(version)
        finally:
            ws.close()


@pytest.fixture
def make_proxy():
    started = []

    def make(qemu, **changes):
        proxy = InProcessProxy(qemu, **changes)
        proxy.service.startService()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        pytest_twisted.blockon(proxy.service.stopService())


def tls(pki, **extra):
    return dict(vnc_tls_ca=str(pki / "ca.pem"), **extra)


@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
@pytest_twisted.inlineCallbacks
def test_x509vnc_reaches_server_init(make_proxy, qemu_x509vnc, pki, version):
    """With the CA configured, the proxy runs X509Vnc with QEMU and every RFB version gets ServerInit."""
    proxy = make_proxy(qemu_x509vnc, **tls(pki))
    init = yield in_thread(proxy.open_console, version)
    assert (init.width, init.height) == (720, 400) or init.width * init.height > 0
    assert init.name == "QEMU"


@pytest_twisted.inlineCallbacks
def test_dns_name_in_the_certificate_is_accepted(make_proxy, qemu_x509vnc, pki):
    """tls_hostname picks the name checked against the certificate (here its DNS name)."""
    proxy = make_proxy(qemu_x509vnc, **tls(pki, vnc_tls_hostname="vnc.example.test"))
    init = yield in_thread(proxy.open_console)
    assert init.name == "QEMU"


@pytest_twisted.inlineCallbacks
def test_wrong_hostname_is_refused(make_proxy, qemu_x509vnc, pki):
    """A certificate that does not carry the expected name is refused with that reason."""
    proxy = make_proxy(qemu_x509vnc, **tls(pki, vnc_tls_hostname="other.example.test"))
    with pytest.raises(RfbRefused) as refused:
        yield in_thread(proxy.open_console)
    assert "certificate does not match the expected name 'other.example.test'" in str(refused.value)


@pytest_twisted.inlineCallbacks
def test_wrong_ca_is_refused(make_proxy, qemu_x509vnc, pki):
    """A certificate not signed by the configured CA is refused with that reason."""
    proxy = make_proxy(qemu_x509vnc, vnc_tls_ca=str(pki / "other-ca.pem"))
    with pytest.raises(RfbRefused) as refused:
        yield in_thread(proxy.open_console)
    assert "not signed by the configured CA" in str(refused.value)


@pytest_twisted.inlineCallbacks
def test_no_ca_fails_closed(make_proxy, qemu_x509vnc):
    """Without a CA the proxy refuses a TLS-only VNC server instead of trying anything plain."""
    proxy = make_proxy(qemu_x509vnc)
    with pytest.raises(RfbRefused) as refused:
        yield in_thread(proxy.open_console)
    assert "requires TLS (VeNCrypt) but no CA is configured" in str(refused.value)


@pytest_twisted.inlineCallbacks
def test_client_certificate_when_qemu_verifies_peers(make_proxy, qemu_verify_peer, pki):
    """QEMU with verify-peer accepts the proxy's client certificate (X509None)."""
    proxy = make_proxy(qemu_verify_peer, **tls(pki, vnc_tls_cert=str(pki / "client-cert.pem"),
                                                vnc_tls_key=str(pki / "client-key.pem")))
    init = yield in_thread(proxy.open_console)
    assert init.name == "QEMU"


@pytest_twisted.inlineCallbacks
def test_missing_client_certificate_is_reported(make_proxy, qemu_verify_peer, pki):
    """Without a client certificate, QEMU's refusal reaches the viewer as a TLS failure."""
    proxy = make_proxy(qemu_verify_peer, **tls(pki))
    with pytest.raises(RfbRefused) as refused:
        yield in_thread(proxy.open_console)
    assert "during the TLS handshake (if it verifies clients, configure [vnc] tls_cert" \
        in str(refused.value)


@pytest_twisted.inlineCallbacks
def test_anonymous_tls_when_enabled(make_proxy, qemu_anonymous):
    """With tls_anonymous on, the proxy runs TLSVnc (anonymous DH, TLS 1.2) with QEMU's tls-creds-anon."""
    proxy = make_proxy(qemu_anonymous, vnc_tls_anonymous=True)
    init = yield in_thread(proxy.open_console)
    assert init.name == "QEMU"


@pytest_twisted.inlineCallbacks
def test_anonymous_tls_refused_when_a_ca_is_configured(make_proxy, qemu_anonymous, pki):
    """With a CA configured, a server offering only anonymous TLS is refused (no downgrade)."""
    proxy = make_proxy(qemu_anonymous, **tls(pki))
    with pytest.raises(RfbRefused) as refused:
        yield in_thread(proxy.open_console)
    assert "need X509None or X509Vnc (certificate-verified TLS) (offered: 258 (TLSVNC))" \
        in str(refused.value)


@pytest_twisted.inlineCallbacks
def test_anonymous_tls_refused_by_default(make_proxy, qemu_anonymous):
    """By default (no CA, tls_anonymous off) anonymous TLS is refused too."""
    proxy = make_proxy(qemu_anonymous)
    with pytest.raises(RfbRefused) as refused:
        yield in_thread(proxy.open_console)
    assert "requires TLS (VeNCrypt) but no CA is configured" in str(refused.value)


@pytest.fixture(scope="module")
def qemu_plain(qemu_available, tmp_path_factory):
    """QEMU without TLS, with a VNC password: it offers VNC Authentication only."""
    q = QemuVnc(tmp_path_factory.mktemp("qemu-plain"), password=PASSWORD).start()
    yield q
    q.stop()


@pytest.fixture(scope="module")
def qemu_open(qemu_available, tmp_path_factory):
    """QEMU without TLS or password: it offers None only."""
    q = QemuVnc(tmp_path_factory.mktemp("qemu-open")).start()
    yield q
    q.stop()


@pytest.mark.parametrize("version", [(3, 3), (3, 8)])
@pytest_twisted.inlineCallbacks
def test_with_a_ca_plain_qemu_is_refused_not_used_in_the_clear(make_proxy, qemu_plain,
                                                                qemu_open, pki, version):
    """With [vnc] tls_ca set, a real QEMU without TLS (offering VNC Authentication, or None) is
    refused with the reason: no session in the clear, no DES response made with the password;
    without a CA the same QEMU serves (the refusal is the CA's doing)."""
    for qemu in (qemu_plain, qemu_open):
        proxy = make_proxy(qemu, **tls(pki))
        with pytest.raises(RfbRefused) as refused:
            yield in_thread(proxy.open_console, version)
        assert "does not offer VeNCrypt with X.509 but a CA is configured ([vnc] tls_ca): " \
               "refusing to connect in the clear" in str(refused.value)
    init = yield in_thread(make_proxy(qemu_plain).open_console, version)
    assert init.name == "QEMU"
