"""
The PROXY protocol (v1 and v2, HAProxy's C{send-proxy} / C{send-proxy-v2}) on a listener, for
the listeners named in C{[proxy] proxy_protocol}.

Built on Twisted's C{haproxy:} endpoint wrapper (its header parsers and its C{getPeer()} /
C{getHost()} that answer with the addresses the header states), with three changes:

- only a connection from a trusted proxy (C{[proxy] trusted}) is heard; anyone else could state
  any client address, so they are cut at once;
- the listener's own protocol starts (C{connectionMade}) only once the header is in, so that
  everything it does with the peer (the pending cap per address, the audit, the rate limiter)
  sees the client, not the balancer (Twisted's wrapper starts it first);
- the header must arrive within L{HEADER_TIMEOUT} seconds and is at most
  L{MAX_HEADER} bytes; otherwise the connection is cut.

A TLS listener (C{ssl:}) gets the header before TLS, as HAProxy sends it: the wrapper goes
outside the TLS layer (see L{vncproxy.service}).
"""

import enum

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from zope.interface import directlyProvides, providedBy

from vncproxy.clientaddr import client_address

__all__ = ["HEADER_TIMEOUT", "MAX_HEADER", "ProxyProtocolFactory"]

#: Seconds a trusted proxy has to send the header after connecting.
HEADER_TIMEOUT = 10.0
#: Longest header accepted: v1 is at most 107 bytes; v2 carries TLVs, bounded here.
MAX_HEADER = 4096


class _State(enum.Enum):
    AWAIT_HEADER = 1  # the listener's protocol has not started
    RELAYING = 2      # header read: the listener's protocol runs, bytes pass through
    REFUSED = 3       # cut (untrusted source, bad header, too slow): input is ignored


class _ProxyHeaderProtocol(HAProxyProtocolWrapper):
    _log = Logger()
    _deadline = None
    _state = _State.AWAIT_HEADER

    def makeConnection(self, transport):
        # As ProtocolWrapper.makeConnection, except that the wrapped protocol waits for the header.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._pending = b""
        self._seen = 0
        balancer = client_address(transport.getPeer())
        if balancer not in self.factory.trusted:
            self._log.info("refused a connection from {peer}: not a trusted proxy "
                           "([proxy] trusted)", peer=balancer)
            self._refuse()
            return
        self._deadline = self.factory.reactor.callLater(HEADER_TIMEOUT, self._too_slow)

    def _too_slow(self):
        self._deadline = None
        self._log.info("no PROXY protocol header from {peer} within {seconds} s",
                       peer=client_address(self.transport.getPeer()), seconds=HEADER_TIMEOUT)
        self._refuse()

    def dataReceived(self, data):
        if self._state is _State.RELAYING:
            return self.wrappedProtocol.dataReceived(data)
        if self._state is _State.REFUSED:
            return None
        self._pending += data
        self._seen += len(data)
        try:
            info, remaining = self._feed()
        except InvalidProxyHeader:
            self._bad_header()
            return None
        if info is None:
            if self._seen > MAX_HEADER:
                self._bad_header()
            return None
        self._proxyInfo = info
        self._cancel_deadline()
        self._state = _State.RELAYING
        self.wrappedProtocol.makeConnection(self)
        if remaining:
            self.wrappedProtocol.dataReceived(remaining)
        return None

    def _feed(self):
        """
        @return: C{(info, remaining)} once the header is complete, else C{(None, None)}.
        @raise InvalidProxyHeader: when the bytes are not a PROXY header.
        """
        pending = self._pending
        if self._parser is None:
            if pending[:12] == V2Parser.PREFIX[:len(pending[:12])] and len(pending) < 16:
                return None, None
            if pending[:5] == V1Parser.PROXYSTR[:len(pending[:5])] and len(pending) < 8:
                return None, None
            if pending[:12] == V2Parser.PREFIX and pending[12] & 0xF0 == 0x20:
                self._parser = V2Parser()
            elif pending[:6] == b"PROXY ":
                self._parser = V1Parser()
            else:
                raise InvalidProxyHeader()
        self._pending = b""
        return self._parser.feed(pending)

    def _bad_header(self):
        self._log.info("refused a connection from {peer}: no valid PROXY protocol header",
                       peer=client_address(self.transport.getPeer()))
        self._refuse()

    def _refuse(self):
        self._state = _State.REFUSED
        self._cancel_deadline()
        self.transport.abortConnection()

    def _cancel_deadline(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def connectionLost(self, reason):
        self._cancel_deadline()
        if self._state is _State.RELAYING:
            return super().connectionLost(reason)
        self.factory.unregisterProtocol(self)
        return None


class ProxyProtocolFactory(HAProxyWrappingFactory):
    """
    Wraps a listener's factory: each connection must come from a trusted proxy and start with a
    PROXY protocol header; then the listener's protocol runs with the client as its peer.

    @param reactor: an L{IReactorTime} for the header deadline.
    @param wrapped: the listener's factory.
    @param trusted: the L{vncproxy.clientaddr.TrustedProxies}.
    """

    protocol = _ProxyHeaderProtocol

    def __init__(self, reactor, wrapped, trusted):
        super().__init__(wrapped)
        self.reactor = reactor
        self.trusted = trusted
