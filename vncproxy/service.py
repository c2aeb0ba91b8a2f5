"""
The composition root's product: one L{MultiService} holding the hypervisor adapter and the
listeners, sharing one L{ProxyContext}.
"""

import ipaddress
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from vncproxy import hostname, vncconnect
from vncproxy.clientaddr import TrustedProxies
from vncproxy.closecodes import CloseCode
from vncproxy.context import ProxyContext
from vncproxy.endpoints import parse_args
from vncproxy.grants import verifier_for
from vncproxy.hypervisor import LifecycleKind
from vncproxy.lxd.channels import make_factory as make_lxd_factory
from vncproxy.lxd.operations import OperationStore
from vncproxy.lxd.rest import LxdResource
from vncproxy.lxd.trust import (
    CertificateCredential,
    KeyCredential,
    SocketCredential,
    TrustedCertificates,
    UnixSocketService,
    check_owner_group,
    tls_listener,
)
from vncproxy.metrics import Metrics
from vncproxy.proxyproto import ProxyProtocolFactory
from vncproxy.ratelimit import FailureLimiter
from vncproxy.serial.manager import SerialManager
from vncproxy.sessions import SessionRegistry
from vncproxy.tlslisten import is_tls, tls_server_endpoint, tls_server_parts
from vncproxy.tokens import TokenStore
from vncproxy.vnctls import VncTls
from vncproxy.web.api import ApiResource
from vncproxy.web.auth import KeyChecker
from vncproxy.web.clients import WebClients
from vncproxy.web.pageactions import PageActions
from vncproxy.web.site import ConsoleRoot, make_site
from vncproxy.web.websocket import CLOSE_HANDSHAKE_TIMEOUT, make_factory, origin_allowed
from vncproxy.xvpvnc import XvpVncFactory

# Lifecycle events after which the domain's QEMU process is gone.
_STOPPING = {LifecycleKind.STOPPED, LifecycleKind.CRASHED, LifecycleKind.UNDEFINED}

# On stop, how long the viewers' connections may take to end after their close frames were
# queued (behind whatever screen data a slow viewer has not read yet), and how often to look.
# Autobahn drops a viewer that has not answered the close within CLOSE_HANDSHAKE_TIMEOUT.
STOP_GRACE = CLOSE_HANDSHAKE_TIMEOUT + 1.0
_STOP_POLL = 0.05


def plain_text_exposed(config):
    """
    The console listeners (console, xvpvnc, vnc) that speak plain text on a non-loopback address.

    @return: C{[(name, "all interfaces" or the address), ...]}; UNIX sockets, socket
        activation and C{ssl:} listeners are not listed.
    """
    exposed = []
    for name, description in (("console", config.console_listen),
                              ("xvpvnc", config.xvpvnc_listen), ("vnc", config.vnc_listen)):
        args, kwargs = parse_args(description)
        if args[:1] not in (["tcp"], ["tcp6"]):
            continue
        interface = kwargs.get("interface", "")
        if interface in ("", "0.0.0.0", "::"):
            exposed.append((name, "all interfaces"))
            continue
        try:
            loopback = ipaddress.ip_address(interface).is_loopback
        except ValueError:
            loopback = interface == "localhost"
        if not loopback:
            exposed.append((name, interface))
    return exposed


class ConsoleProxyService(MultiService):
    """
    @param config: the L{vncproxy.config.Config}.
    @param reactor: the reactor everything below uses.
    @param hypervisor: an L{IHypervisor} that is also an L{IService} (started and stopped with
        this service).
    @param api_keys: the API keys callers authenticate with.
    @raise vncproxy.config.ConfigError: when a file the configuration names (TLS CA,
        certificate, key) cannot be read or parsed.
    """

    _log = Logger()

    def __init__(self, config, reactor, hypervisor, api_keys):
        super().__init__()
        tokens = TokenStore(reactor, config.token_ttl, config.reconnect_grace,
                            config.reconnect_same_address)
        sessions = SessionRegistry(config.max_vnc_sessions, config.max_vnc_viewers)
        self.ctx = ProxyContext(
            config=config,
            reactor=reactor,
            hypervisor=hypervisor,
            tokens=tokens,
            grants=verifier_for(config, reactor),  # signed grants of a region's control plane
            sessions=sessions,
            metrics=Metrics(tokens, sessions),
            limiter=FailureLimiter(reactor, config.ratelimit_window,
                                   config.ratelimit_slow_after, config.ratelimit_refuse_after),
            vnc_tls=VncTls.from_config(config),
            vnc_connect=vncconnect.effective_mode(config)[0],
            trusted=TrustedProxies(config.proxy_trusted),
        )
        self._reactor = reactor
        self._unsubscribe = None
        self.ctx.urls  # built now: this host's name is looked up once, at start, if at all
        hypervisor.setServiceParent(self)
        # After the hypervisor: started after it, stopped before it (its consoles close first).
        self.ctx.serial = SerialManager(config, reactor, hypervisor, metrics=self.ctx.metrics)
        self.ctx.serial.setServiceParent(self)

        keys = KeyChecker(api_keys)
        self._lxd_factories = []
        self.lxd_operations = OperationStore(reactor, config.token_ttl)
        api_site = make_site(ApiResource(self.ctx, keys, lxd=self._lxd(KeyCredential(keys))),
                             config, reactor=reactor, trusted=self.ctx.trusted)
        self._listen("api", config.api_listen, api_site)
        self._listen_lxd(config)

        secure = config.console_listen.startswith("ssl:")
        web = WebClients(config.novnc_dir, config.xterm_dir,
                         allowed_origins=config.allowed_origins)
        self._console_factory = make_factory(self.ctx, secure)
        console_site = make_site(
            ConsoleRoot(WebSocketResource(self._console_factory), web,
                        actions=PageActions(self.ctx, lambda origin, local: origin_allowed(
                            origin, local, config, secure)),
                        prefix=config.listener_path_prefix), config,
            reactor=reactor, trusted=self.ctx.trusted)
        self._listen("console", config.console_listen, console_site)
        self._listen("xvpvnc", config.xvpvnc_listen, XvpVncFactory(self.ctx))
        self._listen("vnc", config.vnc_listen, XvpVncFactory(self.ctx, greet_at_once=True))

    def _lxd(self, credential):
        """
        The LXD API resource for one listener, whose callers are known by C{credential}.
        """
        factory = make_lxd_factory(self.ctx, self.lxd_operations, credential)
        self._lxd_factories.append(factory)
        return LxdResource(self.ctx, self.lxd_operations, credential, WebSocketResource(factory))

    def _listen_lxd(self, config):
        if config.lxd_listen:
            check_owner_group(config.lxd_socket_owner, config.lxd_socket_group)
            site = make_site(self._lxd(SocketCredential()), config, reactor=self._reactor)
            service = UnixSocketService(self._reactor, config.lxd_listen, site,
                                        config.lxd_socket_owner, config.lxd_socket_group,
                                        config.lxd_socket_mode)
            service.setName("lxd")
            service.setServiceParent(self)
        if config.lxd_listen_tls:
            trusted = TrustedCertificates(config.lxd_trusted_certificates)
            site = make_site(self._lxd(CertificateCredential(trusted)), config,
                             reactor=self._reactor)
            service = StreamServerEndpointService(
                tls_listener(self._reactor, config.lxd_listen_tls), site)
            service.setName("lxd_tls")
            service.setServiceParent(self)

    def _listen(self, name, description, factory):
        proxied = name in self.ctx.config.proxy_protocol
        if is_tls(description) and proxied:
            # The PROXY header comes before TLS: the wrapper goes outside the TLS layer.
            endpoint, options = tls_server_parts(self._reactor, description)
            factory = TLSMemoryBIOFactory(options, False, factory)
        elif is_tls(description):
            endpoint = tls_server_endpoint(self._reactor, description)  # TLS 1.2 at least
        else:
            endpoint = serverFromString(self._reactor, description)
        if proxied:
            factory = ProxyProtocolFactory(self._reactor, factory, self.ctx.trusted)
        service = StreamServerEndpointService(endpoint, factory)
        service.setName(name)
        service.setServiceParent(self)

    def startService(self):
        mode, why = vncconnect.effective_mode(self.ctx.config)
        if why:
            self._log.info("VNC consoles connect over {mode}, not {configured}: {why}",
                           mode=mode, configured=self.ctx.config.vnc_connect, why=why)
        self._unsubscribe = self.ctx.hypervisor.subscribe(self._lifecycle)
        super().startService()
        self._log.info("consoleproxy started: api {api}, console {console}, xvpvnc {xvpvnc}, "
                       "vnc {vnc}", api=self.ctx.config.api_listen,
                       console=self.ctx.config.console_listen,
                       xvpvnc=self.ctx.config.xvpvnc_listen, vnc=self.ctx.config.vnc_listen)
        config = self.ctx.config
        host = urlsplit(self.ctx.urls.console_base).hostname
        why = None if config.public_url else hostname.why_unreachable(host)
        if why:
            self._log.warn("[console] public_url is unset and the console URLs name {host}, {why}:"
                           " set public_url to the URL viewers reach this service at",
                           host=host, why=why)
        self._warn_plain_text()

    def _warn_plain_text(self):
        exposed = plain_text_exposed(self.ctx.config)
        if exposed:
            self._log.warn(
                "plain text on a non-loopback address: {listeners}; console tokens and screens "
                "cross the network unencrypted unless a TLS-terminating balancer fronts them "
                "(use ssl: listeners otherwise; see docs/security.md)",
                listeners=", ".join(f"{name} ({where})" for name, where in exposed))

    def _lifecycle(self, event):
        self.ctx.graphics_refusals.lifecycle(event)
        if event.kind in _STOPPING:
            sessions = self.ctx.sessions.sessions(event.uuid)
            if sessions:
                self._log.info("instance {instance} stopped: closing {n} sessions",
                               instance=event.uuid, n=len(sessions))
            self.ctx.sessions.close_instance(event.uuid, CloseCode.INSTANCE_STOPPED)

    def stopService(self):
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        live = self.ctx.sessions.sessions()
        self.ctx.sessions.close_all(CloseCode.SERVICE_STOPPING)
        # The process ends soon after this returns: first let the close frames reach the
        # viewers. WebSocket viewers: until the close handshake has ended each connection,
        # within STOP_GRACE; other viewers (xvpvnc): a moment.
        deadline = self._reactor.seconds() + STOP_GRACE
        d = task.deferLater(self._reactor, 0.5 if live else 0, self._connections_closed, deadline)
        d.addCallback(lambda _: super(ConsoleProxyService, self).stopService())
        return d

    def _connections_closed(self, deadline):
        connections = set(self._console_factory.connections)
        for factory in self._lxd_factories:
            connections |= factory.connections
        if not connections:
            return defer.succeed(None)
        if self._reactor.seconds() >= deadline:
            self._log.warn("stopping with {n} console connections still open", n=len(connections))
            return defer.succeed(None)
        return task.deferLater(self._reactor, _STOP_POLL, self._connections_closed, deadline)
