"""
L{UpstreamConnection}: a session's connection to the VM's VNC server, up to a finished RFB
handshake (L{vncproxy.rfb.UpstreamHandshake}: our side authenticates with libvirt's password;
VeNCrypt's TLS is started on the transport, see L{vncproxy.vnctls}).

It reports to its owner (the L{vncproxy.vnc.VncSession}), once each at most::

    upstream_ready()               QEMU accepted us and waits for ClientInit
    upstream_refused(code, detail) before the relay: the console cannot be reached, refused
                                   us, or closed (the viewer is to be told why)
    upstream_failed(code, detail)  QEMU broke the protocol after its handshake
    upstream_lost()                QEMU's connection ended while relaying

and, from L{relay} on, every byte QEMU sends goes straight to the sink it was given.
"""

import enum
import ipaddress
import os

from twisted.internet import defer
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from vncproxy import relay, vncconnect
from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import (
    GraphicsUnavailable,
    HypervisorError,
    InstanceNotRunning,
    NoSuchInstance,
)
from vncproxy.nodelay import no_delay
from vncproxy.rfb import HandshakeFailed, SecurityAccepted, StartTLS, UpstreamHandshake
from vncproxy.vnctls import TlsUnavailable

#: Bytes QEMU may send between its handshake and our ClientInit (it should send none).
MAX_EARLY_BYTES = 64 * 1024
# QEMU's bytes are read in chunks this large (Twisted reads 64 KiB): see docs/performance.md.
READ_CHUNK = 256 * 1024


def _tcp_endpoint(reactor, host, port, timeout):
    """
    The endpoint for QEMU's VNC server. libvirt reports an address (an IP literal) nearly
    always: connecting to it directly skips L{HostnameEndpoint}'s resolution and connection
    racing (about 0.5 ms of CPU per session, measured with bench/); a host name still gets it.
    """
    try:
        family = ipaddress.ip_address(host).version
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    endpoint = TCP6ClientEndpoint if family == 6 else TCP4ClientEndpoint
    return endpoint(reactor, host, port, timeout=timeout)


class _Refused(Exception):
    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class _Factory(Factory):
    """
    C{connectProtocol}'s one-shot factory, without its "Starting factory" and "Stopping
    factory" log lines for every session (C{noisy}).
    """

    noisy = False

    def __init__(self, protocol):
        self._protocol = protocol

    def buildProtocol(self, addr):
        return self._protocol


class _Protocol(Protocol):
    def __init__(self, connection):
        self._connection = connection
        self.sink = connection._data  # replaced by the relay's sink (L{UpstreamConnection.relay})

    def connectionMade(self):
        self._connection._connected(self.transport)

    def dataReceived(self, data):
        self.sink(data)

    def connectionLost(self, reason):
        self._connection._lost(reason)


class Phase(enum.Enum):
    CONNECTING = "looking the console up and connecting"
    HANDSHAKE = "RFB handshake with the VNC server (TLS inside it for VeNCrypt)"
    READY = "handshake done; QEMU waits for ClientInit"
    RELAYING = "its bytes go to the relay"
    DONE = "dropped, refused or lost"


class UpstreamConnection:
    """
    @param ctx: the L{vncproxy.context.ProxyContext}.
    @param grant: the L{vncproxy.tokens.Grant} (the instance, and its id for logs).
    @param owner: receives the reports listed in the module docstring.
    """

    _log = Logger()

    def __init__(self, ctx, grant, owner):
        self._ctx = ctx
        self._reactor = ctx.reactor
        self._grant = grant
        self._owner = owner
        self.phase = Phase.CONNECTING
        self.transport = None
        self._protocol = None
        self._machine = None
        self._connecting = None
        self._connect_started = None
        self._vnc_host = None
        self._tls_hostname = None
        self._tls_on = False
        self._early = b""  # QEMU's bytes after its handshake, before the relay

    def connect(self):
        d = defer.maybeDeferred(self._ctx.hypervisor.describe, self._grant.instance_uuid)
        d.addCallback(self._connect)
        d.addErrback(self._connect_failed)

    def relay(self, sink):
        """
        From now on QEMU's bytes go to C{sink(data)}.

        @return: what QEMU sent between its handshake and now (to go to the viewer first).
        """
        self.phase = Phase.RELAYING
        self._protocol.sink = sink
        early, self._early = self._early, b""
        return early

    def stop(self):
        """
        Drop the connection (or the attempt); nothing more is reported.
        """
        self.phase = Phase.DONE
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self.transport is not None:
            self.transport.loseConnection()

    # -- connecting --------------------------------------------------------------------------

    def _connect(self, info):
        if self.phase is not Phase.CONNECTING:
            return None
        if not info.active:
            raise _Refused(CloseCode.INSTANCE_STOPPED, "instance is not running")
        vnc = info.vnc
        if vnc is None:
            raise _Refused(CloseCode.CONSOLE_UNAVAILABLE, "instance has no VNC console")
        self._vnc_host = vnc.host
        self._connect_started = self._reactor.seconds()
        self._protocol = _Protocol(self)
        if (self._ctx.vnc_connect == vncconnect.GRAPHICS_FD
                and not self._ctx.graphics_refusals.refused(info.uuid)):
            # Not kept in _connecting: cancelling it would lose the descriptor libvirt hands
            # over; _adopt closes it when the session ended meanwhile.
            d = self._ctx.hypervisor.open_graphics(info.uuid)
            d.addCallback(self._adopt)
            d.addErrback(self._graphics_refused, info)
            return d
        return self._connect_tcp(vnc)

    def _adopt(self, fd):
        """
        libvirt's socket to QEMU's VNC server, past its authentication: QEMU offers security
        type None on it.
        """
        if self.phase is not Phase.CONNECTING:
            os.close(fd)
            return
        self._machine = UpstreamHandshake(password=None, tls=None)
        vncconnect.adopt(self._reactor, fd, _Factory(self._protocol))

    def _graphics_refused(self, failure, info):
        failure.trap(GraphicsUnavailable)
        self._ctx.graphics_refusals.remember(info.uuid)
        if self.phase is not Phase.CONNECTING:
            return None
        self._log.info("vnc session {grant_id}: libvirt gives no graphics socket for {instance} "
                       "({error}); connecting over tcp, as its next sessions will until it "
                       "starts again", grant_id=self._grant.id,
                       instance=self._grant.instance_uuid, error=failure.getErrorMessage())
        return self._connect_tcp(info.vnc)

    def _connect_tcp(self, vnc):
        timeout = self._ctx.config.vnc_connect_timeout
        if vnc.socket:
            endpoint = UNIXClientEndpoint(self._reactor, vnc.socket, timeout=timeout)
        else:
            endpoint = _tcp_endpoint(self._reactor, vnc.host, vnc.port, timeout)
        password = vnc.password.encode("utf-8") if vnc.password else None
        self._machine = UpstreamHandshake(password=password, tls=self._ctx.vnc_tls.mode)
        self._connecting = endpoint.connect(_Factory(self._protocol))
        return self._connecting

    def _connect_failed(self, failure):
        if self.phase is not Phase.CONNECTING:
            return
        if failure.check(_Refused):
            self._refused(failure.value.code, failure.value.detail)
        elif failure.check(NoSuchInstance):
            self._refused(CloseCode.INSTANCE_STOPPED, "instance no longer exists")
        elif failure.check(InstanceNotRunning):
            self._refused(CloseCode.INSTANCE_STOPPED, "instance is not running")
        elif failure.check(HypervisorError):
            self._refused(CloseCode.CONSOLE_UNAVAILABLE, "hypervisor unavailable")
        elif failure.check(defer.CancelledError):
            pass
        else:
            self._log.info("vnc session {grant_id}: cannot reach the VNC server: {error}",
                           grant_id=self._grant.id, error=failure.getErrorMessage())
            self._refused(CloseCode.CONSOLE_UNAVAILABLE, "cannot reach the VM's VNC server")

    def _connected(self, transport):
        self._connecting = None
        if self.phase is not Phase.CONNECTING:
            transport.abortConnection()
            return
        self.phase = Phase.HANDSHAKE
        self.transport = transport
        no_delay(transport)
        if hasattr(transport, "bufferSize"):  # Twisted's recv() size (and write buffer mark)
            transport.bufferSize = READ_CHUNK
        relay.write_through(self._ctx.fast_paths, transport)

    # -- the handshake -----------------------------------------------------------------------

    def _data(self, data):
        if self.phase is Phase.HANDSHAKE:
            self._events(self._machine.receive_data(data))
        elif self.phase is Phase.READY:
            # QEMU must stay silent until it gets ClientInit; anything else is a protocol error.
            self._early += data
            if len(self._early) > MAX_EARLY_BYTES:
                self.stop()
                self._owner.upstream_failed(CloseCode.CONSOLE_UNAVAILABLE,
                                            "VNC server sent unexpected data")

    def _events(self, events):
        out = self._machine.data_to_send()
        if out:
            self.transport.write(out)
        for event in events:
            if self.phase is not Phase.HANDSHAKE:
                return
            if isinstance(event, StartTLS):
                self._start_tls(event)
            elif isinstance(event, SecurityAccepted):
                self.phase = Phase.READY
                self._early = event.leftover
                self._ctx.metrics.handshake_seconds.observe(
                    self._reactor.seconds() - self._connect_started)
                self._owner.upstream_ready()
            elif isinstance(event, HandshakeFailed):
                self._handshake_failed(event.reason)

    def _start_tls(self, event):
        try:
            options = self._ctx.vnc_tls.client_options(event, self._vnc_host)
        except TlsUnavailable as e:
            self._handshake_failed(f"cannot start TLS with the VNC server: {e}")
            return
        self._tls_hostname = None if event.anonymous else \
            self._ctx.vnc_tls.expected_hostname(self._vnc_host)
        self._log.info("vnc session {grant_id}: starting TLS with the VNC server ({kind})",
                       grant_id=self._grant.id,
                       kind="anonymous" if event.anonymous else
                       f"certificate checked for {self._tls_hostname}")
        self._tls_on = True
        self.transport.startTLS(options)
        self._events(self._machine.tls_started())

    def _handshake_failed(self, reason):
        self._log.warn("vnc session {grant_id}: handshake with the VNC server failed: {reason}",
                       grant_id=self._grant.id, reason=reason)
        self._refused(CloseCode.CONSOLE_UNAVAILABLE, reason)

    def _refused(self, code, detail):
        self.stop()
        self._owner.upstream_refused(code, detail)

    def _lost(self, reason):
        self.transport = None
        phase = self.phase
        if phase is Phase.RELAYING:
            self.phase = Phase.DONE
            self._owner.upstream_lost()
        elif phase in (Phase.HANDSHAKE, Phase.READY):
            if self._tls_on:
                self._handshake_failed(
                    self._ctx.vnc_tls.describe_failure(reason, self._tls_hostname))
            else:
                self._refused(CloseCode.CONSOLE_UNAVAILABLE, "VNC server closed the connection")


__all__ = ["MAX_EARLY_BYTES", "Phase", "READ_CHUNK", "UpstreamConnection"]
