"""
The collaborators every request handler and session needs, built once by the composition root
(L{vncproxy.service}).
"""

from dataclasses import dataclass

from vncproxy.config import Config
from vncproxy.sessions import SessionRegistry
from vncproxy.tokens import TokenStore


@dataclass
class ProxyContext:
    """
    @ivar reactor: the reactor (time, TCP/UNIX connections, threads); tests pass a fake.
    @ivar hypervisor: an L{vncproxy.interfaces.IHypervisor}.
    """

    config: Config
    reactor: object
    hypervisor: object
    tokens: TokenStore
    sessions: SessionRegistry
    metrics: object = None
    limiter: object = None  # FailureLimiter for token redemption failures, per source address
