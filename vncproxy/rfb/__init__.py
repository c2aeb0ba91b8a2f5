"""
Sans-IO RFB (VNC) handshake machines: no sockets, no Twisted.

L{UpstreamHandshake} is the RFB client the proxy runs toward QEMU;
L{DownstreamHandshake} is the RFB server it runs toward a viewer.  Wire
formats live in L{vncproxy.rfb.wire} (and, for the security phase, in
L{vncproxy.rfb.security}), VNC Authentication in L{vncproxy.rfb.vncauth}.
"""

from vncproxy.rfb.downstream import DownstreamHandshake, DownstreamState
from vncproxy.rfb.events import (
    AuthResponse,
    ClientInitReceived,
    HandshakeFailed,
    SecurityAccepted,
    ServerInitReceived,
    StartTLS,
)
from vncproxy.rfb.security import SecurityType, VeNCryptSubtype
from vncproxy.rfb.serverinit import ServerInitReader
from vncproxy.rfb.upstream import UpstreamHandshake, UpstreamState
from vncproxy.rfb.vncauth import check_response, new_challenge, vnc_response
from vncproxy.rfb.wire import client_init

__all__ = [
    "AuthResponse",
    "ClientInitReceived",
    "DownstreamHandshake",
    "DownstreamState",
    "HandshakeFailed",
    "SecurityAccepted",
    "SecurityType",
    "ServerInitReader",
    "ServerInitReceived",
    "StartTLS",
    "UpstreamHandshake",
    "UpstreamState",
    "VeNCryptSubtype",
    "check_response",
    "client_init",
    "new_challenge",
    "vnc_response",
]
