"""
TLS listeners (C{ssl:} endpoint strings) refuse SSLv3, TLS 1.0 and TLS 1.1 and speak TLS 1.2
and 1.3, over real sockets. The client really offers the old versions (security level 0, its
minimum lowered): a permissive control server on the same machine accepts them, so it is the
proxy that refuses. The TLS client toward QEMU (VeNCrypt) does not offer them either.
"""

import socket
import ssl
import threading

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.support import pki
from vncproxy.config import ConfigError, defaults, from_string
from vncproxy.tlslisten import tls_options
from vncproxy.vnctls import VncTls

in_thread = threads.deferToThread
OLD = [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1]
CURRENT = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    ca = pki.make_ca()
    server = pki.issue(ca, "127.0.0.1", names=["127.0.0.1"])
    server.write(directory / "cert.pem", directory / "key.pem")
    return directory / "cert.pem", directory / "key.pem"


def client_context(version):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("ALL:@SECLEVEL=0")  # TLS 1.0/1.1 need SHA-1 suites
    context.minimum_version = version
    context.maximum_version = version
    return context


def handshake(port, version):
    """@return: the negotiated version string, or the error's class name."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_context(version).wrap_socket(raw) as tls:
                return tls.version()
    except (ssl.SSLError, ConnectionResetError, OSError) as e:
        return type(e).__name__


def control_server(cert, key):
    """A Python TLS server that allows TLS 1.0 and up: proof the client offers them."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        for _ in range(len(OLD)):
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass
    threading.Thread(target=serve, daemon=True).start()
    return listener


@pytest_twisted.inlineCallbacks
def test_tls_listeners_refuse_old_versions(make_proxy, certificate):
    """Console and API listeners on ssl: refuse TLS 1.0/1.1 that a permissive server accepts, and speak 1.2/1.3."""
    cert, key = certificate
    proxy = make_proxy(
        console_listen=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        api_listen=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    ports = {name: proxy.service.getServiceNamed(name)._waitingForPort.result.getHost().port
             for name in ("console", "api")}
    listener = control_server(cert, key)
    control = yield in_thread(lambda: [handshake(listener.getsockname()[1], v) for v in OLD])
    listener.close()
    assert control == ["TLSv1", "TLSv1.1"]  # the client does offer them
    for name, port in ports.items():
        old = yield in_thread(lambda: [handshake(port, v) for v in OLD])
        current = yield in_thread(lambda: [handshake(port, v) for v in CURRENT])
        assert old == ["SSLError", "SSLError"], (name, old)
        assert current == ["TLSv1.2", "TLSv1.3"], (name, current)


def test_listener_options_floor_is_tls_1_2(certificate):
    """The options a TLS listener is built with have TLS 1.2 as their minimum, whatever Twisted's default."""
    from OpenSSL import SSL
    cert, key = certificate
    options = tls_options(str(key), str(cert)).getContext().set_options(0)  # returns them
    assert options & SSL.OP_NO_TLSv1 and options & SSL.OP_NO_TLSv1_1


def test_sslmethod_is_refused_in_the_configuration(certificate):
    """An ssl: listener pinning an old method with sslmethod= is a configuration error."""
    cert, key = certificate
    text = f"[listen]\nconsole = ssl:6443:privateKey={key}:certKey={cert}:sslmethod=TLSv1_METHOD\n"
    with pytest.raises(ConfigError, match="sslmethod"):
        from_string(text, "test.conf")


def test_vencrypt_client_does_not_offer_old_versions(tmp_path, certificate):
    """The X.509 TLS client toward QEMU refuses to negotiate below TLS 1.2."""
    from OpenSSL import SSL

    from vncproxy.rfb import StartTLS, VeNCryptSubtype
    ca = pki.make_ca()
    ca.write(tmp_path / "ca.pem")
    tls = VncTls.from_config(defaults(vnc_tls_ca=str(tmp_path / "ca.pem")))
    options = tls.client_options(StartTLS(VeNCryptSubtype.X509NONE), "127.0.0.1")
    # Twisted's client creator keeps its context (22.4) or options (later) privately.
    context = getattr(options, "_ctx", None) or options._createConnection.__self__.getContext()
    flags = context.set_options(0)
    assert flags & SSL.OP_NO_TLSv1 and flags & SSL.OP_NO_TLSv1_1
