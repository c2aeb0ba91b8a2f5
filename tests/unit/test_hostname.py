"""
vncproxy.hostname: the host the URLs name when public_url is unset, and when it looks
unreachable from other machines.
"""

import pytest

from vncproxy import hostname


def resolver(table):
    return lambda name: table.get(name, [])


def test_a_resolvable_fqdn_is_used():
    got = hostname.choose("hv1.example.com", resolver({"hv1.example.com": ["10.0.0.5"]}),
                          lambda: "10.0.0.5")
    assert got == "hv1.example.com"


@pytest.mark.parametrize("fqdn, table", [
    ("bw", {"bw": ["10.0.0.5"]}),                        # a short name (Debian's fresh host)
    ("hv1.example.com", {}),                             # does not resolve
    ("hv1.example.com", {"hv1.example.com": ["127.0.1.1"]}),  # Debian's /etc/hosts line only
])
def test_otherwise_the_outbound_address(fqdn, table):
    assert hostname.choose(fqdn, resolver(table), lambda: "192.168.7.20") == "192.168.7.20"


def test_without_a_route_the_name_after_all():
    assert hostname.choose("bw", resolver({}), lambda: None) == "bw"


def test_the_outbound_address_of_this_machine_is_not_loopback():
    address = hostname._outbound_address()
    assert address is None or not hostname._is_loopback(address)


@pytest.mark.parametrize("host, why", [
    ("bw", "a short host name that other machines may not resolve"),
    ("127.0.0.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("nowhere.example.com", "a name that does not resolve"),
    ("local.example.com", "a name that resolves to loopback only"),
    ("hv1.example.com", None),
    ("192.168.7.20", None),
    ("[2001:db8::5]", None),
])
def test_why_unreachable(host, why):
    table = {"local.example.com": ["127.0.1.1"], "hv1.example.com": ["10.0.0.5", "127.0.1.1"]}
    assert hostname.why_unreachable(host, resolver(table)) == why
