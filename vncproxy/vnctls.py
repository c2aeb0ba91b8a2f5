"""
TLS toward QEMU's VNC server (VeNCrypt): which TLS client options to start, and what to tell
the viewer when TLS fails.

Two kinds, chosen by the subtype QEMU accepted (L{vncproxy.rfb.StartTLS}):

 - X509None / X509Vnc: the server's certificate must chain to the configured CA (C{[vnc]
   tls_ca}) and carry the expected name (C{[vnc] tls_hostname}, or the address libvirt reports
   the VNC server on), checked by service-identity through L{optionsForClientTLS}. A client
   certificate (C{tls_cert}, C{tls_key}) is presented when QEMU asks for one (C{verify-peer}).
 - TLSNone / TLSVnc (only with C{tls_anonymous = true}, never together with a CA): anonymous
   Diffie-Hellman, TLS 1.2, OpenSSL security level 0. It encrypts but authenticates nobody.

Files are read once, when the service is built, so a bad path is a start-up error.
"""

import re

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from vncproxy.config import ConfigError

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TlsUnavailable(Exception):
    """
    TLS cannot be started for this connection (the message says why; safe to show).
    """


def _read(path, key):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"[vnc] {key}: cannot read {path}: {e.strerror}") from None


def _certificates(path, key):
    pems = _PEM_CERTIFICATE.findall(_read(path, key))
    if not pems:
        raise ConfigError(f"[vnc] {key}: no PEM certificate in {path}")
    try:
        return [ssl.Certificate.loadPEM(pem) for pem in pems]
    except Exception as e:  # pyOpenSSL raises its own Error with a list of OpenSSL reasons
        raise ConfigError(f"[vnc] {key}: bad certificate in {path}: {e}") from None


@implementer(IOpenSSLClientConnectionCreator)
class _AnonymousClientTLS:
    """
    Client connections for anonymous (ADH/AECDH) TLS 1.2: what QEMU's C{tls-creds-anon} speaks.
    """

    def __init__(self):
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        # Only the anonymous key exchanges, never a NULL cipher.
        context.set_cipher_list(b"aNULL:!eNULL:@SECLEVEL=0")
        context.set_verify(SSL.VERIFY_NONE)
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        return connection


class VncTls:
    """
    The TLS settings toward VNC servers, read from the configuration.

    @ivar mode: C{"x509"}, C{"anonymous"} or C{None} (VeNCrypt refused), as
        L{vncproxy.rfb.UpstreamHandshake} takes it.
    """

    def __init__(self, mode=None, trust_root=None, client_certificate=None, hostname=""):
        self.mode = mode
        self._trust_root = trust_root
        self._client_certificate = client_certificate
        self._hostname = hostname

    @classmethod
    def from_config(cls, config):
        """
        @raise ConfigError: when a configured file cannot be read or parsed.
        """
        mode = config.vnc_tls_mode
        if mode != "x509":
            return cls(mode)
        trust_root = ssl.trustRootFromCertificates(_certificates(config.vnc_tls_ca, "tls_ca"))
        client = None
        if config.vnc_tls_cert:
            cert = _certificates(config.vnc_tls_cert, "tls_cert")[0]
            key = _read(config.vnc_tls_key, "tls_key")
            try:
                client = ssl.PrivateCertificate.loadPEM(cert.dumpPEM() + key)
            except Exception as e:
                raise ConfigError(f"[vnc] tls_key: bad private key in {config.vnc_tls_key}: "
                                  f"{e}") from None
        return cls(mode, trust_root, client, config.vnc_tls_hostname)

    def expected_hostname(self, vnc_host):
        """
        @param vnc_host: the address libvirt reports the VNC server on (C{None} for a UNIX
            socket).
        @return: the name the server certificate must carry.
        @raise TlsUnavailable: when there is none (a UNIX socket and no C{tls_hostname}).
        """
        hostname = self._hostname or vnc_host
        if not hostname:
            raise TlsUnavailable("the VNC server is on a UNIX socket: set [vnc] tls_hostname "
                                 "to the name its certificate carries")
        return hostname

    def describe_failure(self, failure, hostname):
        """
        L{describe_tls_failure} with what this configuration presented.
        """
        return describe_tls_failure(failure, hostname, self._client_certificate is not None)

    def client_options(self, start_tls, vnc_host):
        """
        @param start_tls: the L{vncproxy.rfb.StartTLS} event.
        @param vnc_host: see L{expected_hostname}.
        @return: what to pass to C{transport.startTLS}.
        @raise TlsUnavailable: when TLS of that kind is not configured.
        """
        if start_tls.anonymous:
            if self.mode != "anonymous":
                raise TlsUnavailable("anonymous TLS is not enabled")
            return _AnonymousClientTLS()
        if self.mode != "x509":
            raise TlsUnavailable("no CA is configured for the VNC server's certificate")
        # Twisted 22.4 (Debian 12) would offer TLS 1.0 by default: 1.2 is our floor.
        return ssl.optionsForClientTLS(self.expected_hostname(vnc_host),
                                       trustRoot=self._trust_root,
                                       clientCertificate=self._client_certificate,
                                       extraCertificateOptions={
                                           "raiseMinimumTo": ssl.TLSVersion.TLSv1_2})


def describe_tls_failure(failure, hostname, client_certificate=False):
    """
    What to tell the viewer (and the log) when the connection to the VNC server died after
    TLS was started.

    @param failure: the L{Failure} C{connectionLost} received.
    @param hostname: the name the certificate was checked against (or C{None}).
    @param client_certificate: whether the proxy presented a client certificate.
    @return: a one-line reason; never contains a secret.
    """
    try:
        from service_identity import VerificationError
    except ImportError:  # service-identity < 18.1 kept it in .exceptions only
        from service_identity.exceptions import VerificationError
    if failure.check(VerificationError):
        return (f"TLS: the VNC server's certificate does not match the expected name "
                f"{hostname!r}; refusing the connection")
    if failure.check(SSL.Error):
        reasons = _openssl_reasons(failure.value)
        if "certificate verify failed" in reasons:
            return ("TLS: the VNC server's certificate is not signed by the configured CA "
                    "(certificate verify failed); refusing the connection")
        return f"TLS handshake with the VNC server failed ({reasons or 'no reason given'})"
    if client_certificate:
        return "VNC server closed the connection during the TLS handshake"
    # QEMU with verify-peer checks the client only after a TLS 1.3 handshake, then hangs up.
    return ("VNC server closed the connection during the TLS handshake (if it verifies "
            "clients, configure [vnc] tls_cert and tls_key)")


def _openssl_reasons(error):
    """
    @param error: an L{SSL.Error}; its first argument is a list of (lib, func, reason).
    """
    reasons = []
    for entry in (error.args[0] if error.args and isinstance(error.args[0], list) else []):
        if isinstance(entry, tuple) and entry:
            reasons.append(str(entry[-1]))
    return ", ".join(reasons) or str(error)


__all__ = ["TlsUnavailable", "VncTls", "describe_tls_failure"]
