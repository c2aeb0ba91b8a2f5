"""
The real client address of a connection or request, behind trusted front proxies.

Two ways a front proxy (HAProxy, a load balancer) tells us who the client is:

- the PROXY protocol (v1 or v2) header at the start of each connection, on the listeners named
  in C{[proxy] proxy_protocol} (L{vncproxy.proxyproto}): the transport's C{getPeer()} then is the
  client, so L{client_address} of a transport needs nothing more;
- C{Forwarded} (RFC 7239, its C{for=} parameters) or, without it, C{X-Forwarded-For} on HTTP
  requests: honoured only when the connection comes from an address in C{[proxy] trusted}.

The rule for forwarding headers: start from the connection's address; while that address is a
trusted proxy, step to the previous hop in the header (right to left); the first address that is
not a trusted proxy is the client. A hop that is not an IP address (C{unknown}, an obfuscated
name, garbage) stops the walk at the last trusted proxy: a client can prepend anything it likes
to the header, but never get past a trusted proxy's own entry. Without trusted proxies, the
headers are ignored.

Everything that names a client (the rate limiter, the pending caps, the audit, the access log,
the session's peer) uses L{client_address}.
"""

import ipaddress

__all__ = ["NO_PROXIES", "TrustedProxies", "client_address", "forwarded_for"]


def _ip(text):
    """
    @return: the L{ipaddress} address in C{text} (an IPv4-mapped IPv6 address as IPv4), or
        C{None} when it is not one.
    """
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


class TrustedProxies:
    """
    The front proxies whose forwarding headers we believe.

    @param entries: addresses or networks (C{10.0.0.5}, C{10.1.0.0/24}, C{fd00::/64}).
    @raise ValueError: for an entry that is neither.
    """

    def __init__(self, entries=()):
        self._networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries)

    def __bool__(self):
        return bool(self._networks)

    def __contains__(self, host):
        if not self._networks:
            return False  # (no address to parse: the common case, at every connection)
        address = _ip(host) if isinstance(host, str) else None
        return address is not None and any(address in n for n in self._networks)


NO_PROXIES = TrustedProxies()


def _strip_port(value):
    """
    C{for=} and X-Forwarded-For values: C{"[2001:db8::1]:4711"}, C{"192.0.2.1:80"}, bare
    addresses, quoted or not.
    """
    value = value.strip().strip('"').strip()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def forwarded_for(forwarded, x_forwarded_for):
    """
    The client chain a request's headers state, oldest first.

    @param forwarded: the values of every C{Forwarded} header (a list, maybe empty).
    @param x_forwarded_for: the values of every C{X-Forwarded-For} header.
    @return: the hops (strings, unchecked); C{Forwarded} wins when present.
    """
    hops = []
    forwarded = [v for v in forwarded if v and v.strip()]
    if forwarded:
        for element in ",".join(forwarded).split(","):
            for pair in element.split(";"):
                name, _, value = pair.partition("=")
                if name.strip().lower() == "for":
                    hops.append(_strip_port(value))
        return hops
    return [_strip_port(v) for v in ",".join(x_forwarded_for).split(",") if v.strip()]


def client_address(peer, forwarded=(), x_forwarded_for=(), trusted=NO_PROXIES):
    """
    The real client address of a connection or request (see the module docstring).

    @param peer: the connection's peer: an L{IAddress} (C{getPeer()}, C{getClientAddress()}),
        Autobahn's peer string (C{tcp:1.2.3.4:5678}, C{tcp6:::1:5678}) or a bare host.
    @param forwarded: the request's C{Forwarded} header values, if it is an HTTP request.
    @param x_forwarded_for: its C{X-Forwarded-For} header values.
    @param trusted: the L{TrustedProxies}.
    @return: the client's address as a string (C{"unix"} for a UNIX socket peer).
    """
    host = peer_host(peer)
    if host not in trusted:
        return host
    for hop in reversed(forwarded_for(list(forwarded), list(x_forwarded_for))):
        address = _ip(hop)
        if address is None:
            break
        host = str(address)
        if host not in trusted:
            break
    return host


def peer_host(peer):
    """
    The host part of a connection's peer: an L{IAddress}'s host (C{"unix"} for a UNIX socket),
    or of Autobahn's peer string (C{tcp:1.2.3.4:5678}, C{tcp6:::1:5678}); any other string
    (already a bare address) unchanged, C{None} for none.
    """
    if peer is None:
        return None
    if isinstance(peer, str):
        kind, _, rest = peer.partition(":")
        if kind in ("tcp", "tcp4", "tcp6"):
            return rest.rpartition(":")[0]
        return peer
    host = getattr(peer, "host", None)
    if host is None:
        return "unix"
    address = _ip(host)
    return str(address) if address is not None else host
