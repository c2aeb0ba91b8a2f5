"""
Tests for L{vncproxy.vnctls}: reading the TLS files, choosing client options, and the reasons
given when TLS with the VNC server fails.
"""

import pytest
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure

from tests.support.pki import issue, make_ca
from vncproxy import config
from vncproxy.config import ConfigError
from vncproxy.rfb import StartTLS, VeNCryptSubtype
from vncproxy.vnctls import TlsUnavailable, VncTls, describe_tls_failure

X509 = StartTLS(VeNCryptSubtype.X509VNC)
ANON = StartTLS(VeNCryptSubtype.TLSNONE)


@pytest.fixture
def files(tmp_path):
    ca = make_ca()
    ca.write(tmp_path / "ca.pem")
    issue(ca, "proxy", client=True).write(tmp_path / "cert.pem", tmp_path / "key.pem")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    return tmp_path


def tls_from(**changes):
    return VncTls.from_config(config.defaults(**changes))


def test_x509_options_check_the_expected_name(files):
    """With a CA, StartTLS for an X509 subtype gets client options for the VNC host's name."""
    tls = tls_from(vnc_tls_ca=str(files / "ca.pem"))
    assert tls.mode == "x509"
    options = tls.client_options(X509, "127.0.0.1")
    assert IOpenSSLClientConnectionCreator.providedBy(options)
    assert tls.expected_hostname("127.0.0.1") == "127.0.0.1"


def test_configured_hostname_wins(files):
    """tls_hostname replaces the address libvirt reports."""
    tls = tls_from(vnc_tls_ca=str(files / "ca.pem"), vnc_tls_hostname="vnc.example")
    assert tls.expected_hostname("127.0.0.1") == "vnc.example"


def test_unix_socket_needs_a_hostname(files):
    """A VNC server on a UNIX socket has no name to check unless tls_hostname gives one."""
    tls = tls_from(vnc_tls_ca=str(files / "ca.pem"))
    with pytest.raises(TlsUnavailable, match="tls_hostname"):
        tls.client_options(X509, None)


def test_client_certificate_is_loaded(files):
    """tls_cert and tls_key load into a client certificate."""
    tls = tls_from(vnc_tls_ca=str(files / "ca.pem"), vnc_tls_cert=str(files / "cert.pem"),
                   vnc_tls_key=str(files / "key.pem"))
    assert tls.client_options(X509, "127.0.0.1") is not None


@pytest.mark.parametrize("changes, message", [
    ({"vnc_tls_ca": "missing.pem"}, "[vnc] tls_ca: cannot read missing.pem"),
    ({"vnc_tls_ca": "junk.pem"}, "[vnc] tls_ca: no PEM certificate in"),
    ({"vnc_tls_ca": "ca.pem", "vnc_tls_cert": "cert.pem", "vnc_tls_key": "ca.pem"},
     "[vnc] tls_key: bad private key in"),
    ({"vnc_tls_ca": "ca.pem", "vnc_tls_cert": "cert.pem", "vnc_tls_key": "nokey.pem"},
     "[vnc] tls_key: cannot read"),
])
def test_unreadable_files_are_config_errors(files, changes, message):
    """A missing or malformed TLS file is a start-up error naming the key."""
    changes = {k: str(files / v) if v != "missing.pem" else v for k, v in changes.items()}
    with pytest.raises(ConfigError) as e:
        tls_from(**changes)
    assert str(e.value).startswith(message)


def test_anonymous_needs_its_opt_in(files):
    """Anonymous TLS is refused unless enabled; X509 is refused without a CA."""
    with pytest.raises(TlsUnavailable):
        tls_from(vnc_tls_ca=str(files / "ca.pem")).client_options(ANON, "127.0.0.1")
    with pytest.raises(TlsUnavailable):
        tls_from(vnc_tls_anonymous=True).client_options(X509, "127.0.0.1")
    with pytest.raises(TlsUnavailable):
        VncTls().client_options(X509, "127.0.0.1")


def test_anonymous_connections_offer_only_anonymous_tls_1_2():
    """The anonymous creator's connections offer only aNULL suites, with no NULL encryption."""
    creator = tls_from(vnc_tls_anonymous=True).client_options(ANON, "127.0.0.1")
    connection = creator.clientConnectionForTLS(object())
    ciphers = [c for c in connection.get_cipher_list() if not c.startswith("TLS_")]
    assert ciphers and all(c.startswith(("ADH-", "AECDH-")) for c in ciphers)
    assert not any("NULL" in c for c in ciphers)


def failure_of(exception):
    try:
        raise exception
    except Exception:
        return Failure()


def test_reasons_for_tls_failures():
    """Each kind of TLS failure gets a reason that says what was wrong."""
    from service_identity import VerificationError

    assert "does not match the expected name 'vnc.example'" in describe_tls_failure(
        failure_of(VerificationError(errors=[])), "vnc.example")
    verify = SSL.Error([("SSL routines", "", "certificate verify failed")])
    assert "not signed by the configured CA" in describe_tls_failure(failure_of(verify), "h")
    alert = SSL.Error([("SSL routines", "", "tlsv13 alert certificate required")])
    assert describe_tls_failure(failure_of(alert), "h") == \
        "TLS handshake with the VNC server failed (tlsv13 alert certificate required)"
    assert "configure [vnc] tls_cert" in describe_tls_failure(failure_of(ConnectionError()), "h")
    assert "configure" not in describe_tls_failure(failure_of(ConnectionError()), "h", True)
