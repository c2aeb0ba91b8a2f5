"""
TLS listeners (C{ssl:} endpoint strings in C{[listen]}) with a protocol floor: TLS 1.2.

Twisted's own C{ssl:} parser builds L{CertificateOptions} with Twisted's default minimum, which
is TLS 1.0 in Debian 12's Twisted 22.4. We read the same endpoint string (same keywords:
C{privateKey}, C{certKey}, C{extraCertChain}, C{dhParameters}, C{interface}, C{backlog}) and
build the options ourselves with C{raiseMinimumTo=TLSv1_2}, so SSLv3, TLS 1.0 and TLS 1.1 are
refused whatever the Twisted version. C{sslmethod} is refused: it would pin an old method.
"""

import re

from twisted.internet import ssl
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.python.filepath import FilePath

from vncproxy.config import ConfigError
from vncproxy.endpoints import parse_args as _parse_args

#: The oldest protocol version a TLS listener speaks.
MINIMUM_TLS = ssl.TLSVersion.TLSv1_2

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                              re.DOTALL)


def is_tls(description):
    return _parse_args(description)[0][:1] == ["ssl"]


def tls_options(private_key, cert_key=None, extra_cert_chain=None, dh_parameters=None):
    """
    @return: the L{CertificateOptions} of a TLS listener (TLS 1.2 at least).
    """
    cert_pem = FilePath(cert_key or private_key).getContent()
    key_pem = FilePath(private_key).getContent()
    private = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    chain = None
    if extra_cert_chain:
        chain = [ssl.Certificate.loadPEM(pem).original
                 for pem in _PEM_CERTIFICATE.findall(FilePath(extra_cert_chain).getContent())]
    dh = ssl.DiffieHellmanParameters.fromFile(FilePath(dh_parameters)) if dh_parameters else None
    return ssl.CertificateOptions(privateKey=private.privateKey.original,
                                  certificate=private.original, extraCertChain=chain,
                                  dhParameters=dh, raiseMinimumTo=MINIMUM_TLS)


def tls_server_endpoint(reactor, description, wrap_options=None):
    """
    @param description: an C{ssl:PORT:privateKey=...} endpoint string.
    @param wrap_options: a function given the listener's L{CertificateOptions}, returning the
        context factory to use instead (to ask for client certificates, L{vncproxy.lxd.trust}).
    @return: an L{SSL4ServerEndpoint} refusing protocol versions below TLS 1.2.
    @raise ConfigError: for C{sslmethod}, a missing port or unreadable key files.
    """
    port, options, backlog, interface = _parse_tls(description)
    if wrap_options is not None:
        options = wrap_options(options)
    return SSL4ServerEndpoint(reactor, port, options, backlog=backlog, interface=interface)


def tls_server_parts(reactor, description):
    """
    The same listener in two parts, for a layer that must come before TLS (the PROXY protocol
    header): a plain TCP endpoint and the TLS options to wrap its factory with.

    @return: C{(TCP4ServerEndpoint, CertificateOptions)}.
    @raise ConfigError: as L{tls_server_endpoint}.
    """
    port, options, backlog, interface = _parse_tls(description)
    return TCP4ServerEndpoint(reactor, port, backlog=backlog, interface=interface), options


def _parse_tls(description):
    args, kwargs = _parse_args(description)
    if "sslmethod" in kwargs:
        raise ConfigError(f"{description.split(':')[0]}: sslmethod is not supported "
                          "(TLS listeners speak TLS 1.2 and later)")
    port = args[1] if len(args) > 1 else kwargs.get("port")
    if port is None:
        raise ConfigError("ssl listener without a port")
    try:
        options = tls_options(kwargs.get("privateKey", "server.pem"), kwargs.get("certKey"),
                              kwargs.get("extraCertChain"), kwargs.get("dhParameters"))
    except Exception as e:
        raise ConfigError(f"TLS listener on port {port}: cannot load its certificate or key "
                          f"({e})") from None
    return int(port), options, int(kwargs.get("backlog", 50)), kwargs.get("interface", "")


__all__ = ["MINIMUM_TLS", "is_tls", "tls_options", "tls_server_endpoint", "tls_server_parts"]
