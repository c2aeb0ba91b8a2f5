"""
How a VNC session reaches QEMU's VNC server: C{[vnc] connect}.

    graphics-fd   libvirt hands over a socket already connected to QEMU's VNC server and
                  already past its authentication (virDomainOpenGraphicsFD with
                  VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH): the service never needs the VNC password
                  (libvirt's domain XML is then read without its secrets, so no read-secure
                  permission), and no TCP port of QEMU must be reachable. The socket (a UNIX
                  stream socket) is adopted by the reactor (IReactorSocket).
    tcp           connect to the address and port in the domain's XML and authenticate with
                  its password (or VeNCrypt).

graphics-fd (the default) applies only where it can: the libvirt connection is local (a remote
libvirt cannot pass a file descriptor) and VeNCrypt toward QEMU is not configured (the skipped
authentication would skip its TLS too); otherwise C{tcp}, said once at start. When libvirt
refuses the socket for a domain, that session falls back to C{tcp}, with one log line, and so
do the domain's later sessions without asking again (L{GraphicsRefusals}) until it starts
again or the connection to libvirt is open again.
"""

import os
import socket
from urllib.parse import urlsplit

from vncproxy.hypervisor import LifecycleKind

GRAPHICS_FD = "graphics-fd"
TCP = "tcp"
MODES = (GRAPHICS_FD, TCP)


def is_local(uri):
    """
    Whether a libvirt URI reaches a daemon on this host through a UNIX socket (the only way a
    file descriptor can be passed): no host part, and no network transport.
    """
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    return not parts.hostname and transport in ("", "unix")


def effective_mode(config):
    """
    @return: C{(mode, why)}: the mode sessions use, and why it is not the configured one (or
        C{None}).
    """
    if config.vnc_connect == TCP:
        return TCP, None
    if not is_local(config.libvirt_uri):
        return TCP, f"libvirt at {config.libvirt_uri} is not local"
    if config.vnc_tls_mode is not None:
        return TCP, "VeNCrypt toward the VNC servers is configured"
    return GRAPHICS_FD, None


class GraphicsRefusals:
    """
    The domains libvirt gave no graphics socket (the driver cannot, as libvirt's test driver;
    QEMU refused): their sessions connect over C{tcp} at once instead of asking libvirt on
    every set-up (a round trip to its worker thread). Forgotten for a domain at its next
    lifecycle event (a restart may bring other graphics), for all when libvirt's connection
    is open again (the daemon may have been upgraded).
    """

    def __init__(self):
        self._refused = set()

    def refused(self, uuid):
        return uuid in self._refused

    def remember(self, uuid):
        self._refused.add(uuid)

    def lifecycle(self, event):
        """
        A L{vncproxy.hypervisor.LifecycleEvent}, from the service's subscription.
        """
        if event.kind is LifecycleKind.RECONNECTED:
            self._refused.clear()
        else:
            self._refused.discard(event.uuid)


def adopt(reactor, fd, factory):
    """
    Hand the connected UNIX stream socket C{fd} to the reactor, with a protocol from
    C{factory}; C{fd} is closed (the reactor keeps its own copy).

    @return: the transport.
    """
    try:
        return reactor.adoptStreamConnection(fd, socket.AF_UNIX, factory)
    finally:
        os.close(fd)
