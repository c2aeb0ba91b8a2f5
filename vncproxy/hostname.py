"""
Which host the URLs we hand out name when C{[console] public_url} is unset and the console
listener binds every interface: a name or address a viewer on another machine can reach.

A fresh Debian host often has only a short host name (C{bw}), which other machines cannot
resolve; C{socket.getfqdn()} returns it unchanged. So: the fully qualified name when it has a
domain and resolves to an address that is not loopback; otherwise the address this host would
send from towards other networks (the default route's; found by connecting a UDP socket, which
sends nothing); otherwise the name after all. L{why_unreachable} says when the result still
looks unreachable from elsewhere, for a warning at start.
"""

import ipaddress
import socket

# Documentation addresses (RFC 5737, RFC 3849): a UDP "connect" to them picks the source address
# of the default route without sending a packet.
_PROBES = ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1"))


def _addresses(name):
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [info[4][0] for info in infos]


def _outbound_address():
    for family, probe in _PROBES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                address = s.getsockname()[0]
        except OSError:
            continue
        if not _is_loopback(address):
            return address
    return None


def _is_loopback(address):
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def choose(fqdn, addresses=None, outbound=None):
    """
    The host to name: C{fqdn} when it has a domain and resolves beyond loopback, else the
    outbound address, else C{fqdn}. (L{vncproxy.urls.this_host} asks once per process.)
    """
    addresses = addresses or _addresses
    outbound = outbound or _outbound_address
    if "." in fqdn and any(not _is_loopback(a) for a in addresses(fqdn)):
        return fqdn
    return outbound() or fqdn


def why_unreachable(host, addresses=None):
    """
    Why other machines may not reach C{host}, or C{None} when nothing suggests so.
    """
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        ip = None
    if ip is not None:
        return "a loopback address" if ip.is_loopback or ip.is_unspecified else None
    if "." not in host:
        return "a short host name that other machines may not resolve"
    found = (addresses or _addresses)(host)
    if not found:
        return "a name that does not resolve"
    if all(_is_loopback(a) for a in found):
        return "a name that resolves to loopback only"
    return None
