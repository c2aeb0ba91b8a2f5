"""
Events emitted by the RFB handshake machines.

The machines return these from C{receive_data} (and the downstream machine
also from C{accept} and C{reject}).  A handshake ends with exactly one
terminal event: L{HandshakeFailed}, L{SecurityAccepted} (upstream) or
L{ClientInitReceived} (downstream).
"""

from __future__ import annotations

from dataclasses import dataclass

from vncproxy.rfb.security import VeNCryptSubtype

__all__ = [
    "AuthResponse",
    "ClientInitReceived",
    "HandshakeFailed",
    "SecurityAccepted",
    "ServerInitReceived",
    "StartTLS",
]


@dataclass(frozen=True)
class HandshakeFailed:
    """
    The handshake failed; the machine is in its FAILED state for good.

    @ivar reason: a human-readable reason.  Never contains a password.
        Text that came from the peer has been cleaned of control characters.
    """

    reason: str


@dataclass(frozen=True)
class SecurityAccepted:
    """
    Upstream: the VNC server accepted our security; the glue now sends
    ClientInit (C{wire.client_init(True)}).

    @ivar version: the negotiated C{(major, minor)}.
    @ivar leftover: bytes received after the handshake, not consumed.
    """

    version: tuple[int, int]
    leftover: bytes


@dataclass(frozen=True)
class AuthResponse:
    """
    Downstream, VNC Authentication: the viewer answered the challenge.  The
    glue checks it (L{vncproxy.rfb.vncauth.check_response}) and calls
    C{accept()} or C{reject(reason)} on the machine.

    @ivar challenge: the 16 bytes we sent.
    @ivar response: the 16 bytes the viewer sent back.
    """

    challenge: bytes
    response: bytes


@dataclass(frozen=True)
class ClientInitReceived:
    """
    Downstream: the viewer sent ClientInit; the handshake is done.

    @ivar shared: the viewer's shared flag.
    @ivar version: the negotiated C{(major, minor)}.
    @ivar leftover: bytes received after ClientInit, not consumed.
    """

    shared: bool
    version: tuple[int, int]
    leftover: bytes


@dataclass(frozen=True)
class StartTLS:
    """
    Upstream, VeNCrypt: the VNC server accepted our subtype; start TLS on
    the transport now (no byte may be written in the clear after this), then
    call C{tls_started()} on the machine.  What follows travels inside TLS.

    @ivar subtype: the chosen L{vncproxy.rfb.security.VeNCryptSubtype}.
    @ivar anonymous: C{True} for TLSNone/TLSVnc (anonymous Diffie-Hellman:
        no certificate to verify), C{False} for X509None/X509Vnc (verify the
        server certificate against the CA and the expected hostname).
    """

    subtype: int

    @property
    def anonymous(self) -> bool:
        return self.subtype in (VeNCryptSubtype.TLSNONE, VeNCryptSubtype.TLSVNC)


@dataclass(frozen=True)
class ServerInitReceived:
    """
    Upstream, after ClientInit: the VNC server's ServerInit, checked
    (L{vncproxy.rfb.serverinit}).

    @ivar message: the ServerInit bytes, unchanged, for the viewer.
    @ivar leftover: bytes received after it, not consumed.
    """

    message: bytes
    leftover: bytes
