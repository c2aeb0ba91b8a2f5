"""
The collaborators every request handler and session needs, built once by the composition root
(L{vncproxy.service}).
"""

from dataclasses import dataclass, field
from functools import cached_property

from vncproxy.admission import Admission
from vncproxy.clientaddr import NO_PROXIES, TrustedProxies
from vncproxy.config import Config
from vncproxy.ratelimit import GuessBudget
from vncproxy.sessions import SessionRegistry
from vncproxy.tokens import TokenStore
from vncproxy.urls import Urls
from vncproxy.vncconnect import GraphicsRefusals
from vncproxy.vnctls import VncTls


@dataclass
class ProxyContext:
    """
    @ivar reactor: the reactor (time, TCP/UNIX connections, threads); tests pass a fake.
    @ivar hypervisor: an L{vncproxy.interfaces.IHypervisor}.
    @ivar serial: the L{vncproxy.serial.manager.SerialManager} (serial capture, hubs, logs), or
        C{None} where serial consoles are not wired up.
    @ivar grants: the L{vncproxy.grants.GrantVerifier} when the node accepts signed grants.
    @ivar vnc_tls: the L{vncproxy.vnctls.VncTls} settings toward VNC servers (default: none,
        so a VNC server requiring TLS is refused).
    @ivar vnc_connect: C{"graphics-fd"} or C{"tcp"}, the mode in effect (see
        L{vncproxy.vncconnect.effective_mode}).
    @ivar graphics_refusals: the L{vncproxy.vncconnect.GraphicsRefusals} (domains whose
        sessions connect over tcp without asking libvirt for a socket first).
    @ivar fast_paths: the L{vncproxy.relay.FastPaths} that are on (default: those the config
        asks for that passed their checks).
    """

    config: Config
    reactor: object
    hypervisor: object
    tokens: TokenStore
    sessions: SessionRegistry
    serial: object = None
    metrics: object = None
    limiter: object = None  # FailureLimiter for token redemption failures, per source address
    grants: object = None  # GrantVerifier of signed grants ([tokens] trusted_issuers), or None
    vnc_tls: VncTls = field(default_factory=VncTls)
    vnc_connect: str = "tcp"  # how sessions reach QEMU's VNC server (vncproxy.vncconnect)
    trusted: TrustedProxies = NO_PROXIES  # [proxy] trusted: whose forwarding headers count
    fast_paths: object = None  # vncproxy.relay.FastPaths; None: decided from config
    graphics_refusals: GraphicsRefusals = field(default_factory=GraphicsRefusals)

    def __post_init__(self):
        if self.fast_paths is None:
            from vncproxy import relay

            self.fast_paths = relay.decide(self.config)

    @cached_property
    def admission(self):
        """
        The one L{vncproxy.admission.Admission} every listener admits grants through.
        """
        return Admission(self)

    @cached_property
    def guesses(self):
        """
        The L{vncproxy.ratelimit.GuessBudget} every native password check waits in.
        """
        rate = self.config.xvpvnc_password_checks_per_second
        return GuessBudget(self.reactor, rate, burst=rate)

    @cached_property
    def urls(self):
        """
        The L{vncproxy.urls.Urls} we hand out (built once: the host name is looked up once).
        """
        return Urls(self.config)
