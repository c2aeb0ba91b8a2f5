"""
Who may call the LXD API, per listener (a I{credential}: C{identify(transport, header)} returns
a caller label safe to log, or C{None}):

    unix:   L{SocketCredential}: whoever can open the socket (its owner, group and mode are
            the access control, as for LXD's own socket and group C{lxd}); the label names the
            peer's uid (SO_PEERCRED)
    ssl:    L{CertificateCredential}: a client certificate whose SHA-256 fingerprint is in
            C{[lxd] trusted_certificates} (a PEM file, or a directory of them: read at each
            connection, so adding or removing a file needs no restart)
    api:    L{KeyCredential}: our API key (C{Authorization: Bearer} or C{X-Auth-Token})

An operation's secrets work only for the caller who created it where every connection names
its caller (C{ambient}: the socket, the certificate); on the token API a WebSocket may come
without the key, but not with another one.

The TLS listener asks every client for a certificate and accepts any at the handshake (LXD
does the same): an unknown one must still reach C{GET /1.0} to learn it is C{untrusted}.
"""

import grp
import os
import pwd
import socket
import struct

from OpenSSL import SSL
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import ssl
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.logger import Logger

from vncproxy.config import ConfigError
from vncproxy.endpoints import parse_args
from vncproxy.tlslisten import _PEM_CERTIFICATE, tls_server_endpoint
from vncproxy.web.auth import presented_key

_log = Logger()


def fingerprint(certificate):
    """
    The SHA-256 fingerprint of a certificate (pyOpenSSL C{X509}), lower-case hex as LXD shows.
    """
    return certificate.digest("sha256").decode("ascii").replace(":", "").lower()


class TrustedCertificates:
    """
    @param path: a PEM file (one or more certificates) or a directory of C{*.crt} / C{*.pem}.
    """

    def __init__(self, path):
        self.path = path

    def _files(self):
        if os.path.isdir(self.path):
            return [os.path.join(self.path, name) for name in sorted(os.listdir(self.path))
                    if name.endswith((".crt", ".pem"))]
        return [self.path]

    def fingerprints(self):
        found = set()
        for path in self._files():
            try:
                with open(path, "rb") as f:
                    data = f.read()
                for pem in _PEM_CERTIFICATE.findall(data):
                    found.add(fingerprint(ssl.Certificate.loadPEM(pem).original))
            except Exception as e:  # one bad file must not lock everyone out
                _log.warn("[lxd] trusted_certificates: skipping {path}: {error}", path=path,
                          error=str(e))
        return found


class CertificateCredential:
    refusal = 403
    ambient = True  # every connection names its caller (its certificate)

    def __init__(self, trusted):
        self._trusted = trusted

    def identify(self, transport, header):
        get = getattr(transport, "getPeerCertificate", None)
        certificate = get() if get is not None else None
        if certificate is None:
            return None
        digest = fingerprint(certificate)
        if digest in self._trusted.fingerprints():
            return "cert-" + digest[:12]
        return None


class SocketCredential:
    refusal = 403
    ambient = True  # every connection names its caller (its peer's uid)

    def identify(self, transport, header):
        try:
            raw = transport.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                   struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", raw)
            return f"unix-uid-{uid}"
        except (AttributeError, OSError):
            return "unix"


class KeyCredential:
    refusal = 401
    ambient = False  # a WebSocket may come without the key (pylxd's do)

    def __init__(self, keys):
        self._keys = keys

    def identify(self, transport, header):
        return self._keys.identify(presented_key(_HeaderView(header)))


class _HeaderView:
    # presented_key reads request.getHeader(bytes)
    def __init__(self, header):
        self._header = header

    def getHeader(self, name):
        value = self._header(name.decode("latin-1"))
        return value.encode("latin-1") if isinstance(value, str) else value


class _AskForClientCertificate:
    """
    Wraps a listener's L{CertificateOptions}: the server asks for a client certificate and
    accepts any (the HTTP layer checks it against the trusted ones).
    """

    def __init__(self, options):
        self._options = options
        self._context = None

    def getContext(self):
        if self._context is None:
            context = self._options.getContext()
            context.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: True)
            context.set_session_id(b"consoleproxy-lxd")
            self._context = context
        return self._context


def tls_listener(reactor, description):
    """
    The C{ssl:} endpoint of C{[lxd] listen_tls}: TLS 1.2 and later, asking for client
    certificates.
    """
    return tls_server_endpoint(reactor, description, wrap_options=_AskForClientCertificate)


class UnixSocketService(StreamServerEndpointService):
    """
    The C{unix:} listener of C{[lxd] listen}, with the socket's owner, group and mode applied
    once it listens (the mode at creation already, so it is never more open than asked).
    """

    def __init__(self, reactor, description, factory, owner, group, mode):
        args, kwargs = parse_args(description)
        self.path = args[1] if len(args) > 1 else kwargs.get("address")
        endpoint = UNIXServerEndpoint(reactor, self.path, mode=mode, wantPID=True)
        super().__init__(endpoint, factory)
        self._owner, self._group, self._mode = owner, group, mode

    def privilegedStartService(self):
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._apply_ownership)

    def _apply_ownership(self, port):
        uid = pwd.getpwnam(self._owner).pw_uid if self._owner else -1
        gid = grp.getgrnam(self._group).gr_gid if self._group else -1
        try:
            if uid != -1 or gid != -1:
                os.chown(self.path, uid, gid)
            os.chmod(self.path, self._mode)
        except OSError as e:
            # Fail closed: the socket stays the service's own, at the mode it was made with.
            _log.error("LXD API socket {path}: cannot give it to {owner}:{group} ({error}); "
                       "it stays the service's user's and group's", path=self.path,
                       owner=self._owner or "-", group=self._group or "-", error=e.strerror)
            return port
        _log.info("LXD API socket {path} (owner {owner}, group {group}, mode {mode:o})",
                  path=self.path, owner=self._owner or "service user",
                  group=self._group or "service group", mode=self._mode)
        return port


def check_owner_group(owner, group):
    """
    @raise ConfigError: when the owner or group does not exist on this host.
    """
    try:
        if owner:
            pwd.getpwnam(owner)
        if group:
            grp.getgrnam(group)
    except KeyError as e:
        raise ConfigError(f"[lxd] socket owner/group: no such user or group {e}") from None
