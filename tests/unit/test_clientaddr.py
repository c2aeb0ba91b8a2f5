"""
Tests for L{vncproxy.clientaddr} (the real client behind trusted proxies) and
L{vncproxy.proxyproto} (the PROXY protocol header on a listener), without sockets.
"""

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from vncproxy.clientaddr import NO_PROXIES, TrustedProxies, client_address, forwarded_for
from vncproxy.proxyproto import HEADER_TIMEOUT, MAX_HEADER, ProxyProtocolFactory

LB = TrustedProxies(["10.0.0.5", "10.1.0.0/24"])


@pytest.mark.parametrize("peer,forwarded,xff,expected", [
    ("192.0.2.1", [], ["198.51.100.7"], "192.0.2.1"),           # untrusted: headers ignored
    ("10.0.0.5", [], ["198.51.100.7"], "198.51.100.7"),
    ("10.0.0.5", [], ["1.2.3.4, 198.51.100.7"], "198.51.100.7"),  # a client's prefix is not believed
    ("10.0.0.5", [], ["198.51.100.7, 10.1.0.9"], "198.51.100.7"),  # two trusted hops
    ("10.0.0.5", [], ["198.51.100.7", "10.1.0.9"], "198.51.100.7"),  # repeated header
    ("10.0.0.5", [], ["unknown"], "10.0.0.5"),                   # garbage stops at the proxy
    ("10.0.0.5", [], ["1.2.3.4, garbage, 10.1.0.9"], "10.1.0.9"),
    ("10.0.0.5", [], [], "10.0.0.5"),
    ("10.0.0.5", ['for=192.0.2.60;proto=http;by=203.0.113.43'], ["1.1.1.1"], "192.0.2.60"),
    ("10.0.0.5", ['for="[2001:db8:cafe::17]:4711"'], [], "2001:db8:cafe::17"),
    ("10.0.0.5", ['for=198.51.100.1, for="198.51.100.2:80"'], [], "198.51.100.2"),
    ("10.0.0.5", ["for=_hidden"], [], "10.0.0.5"),
    ("tcp4:10.0.0.5:4000", [], ["198.51.100.7"], "198.51.100.7"),  # Autobahn's peer string
    ("tcp6:::ffff:10.0.0.5:4000", [], ["198.51.100.7"], "198.51.100.7"),
])
def test_the_client_behind_trusted_proxies(peer, forwarded, xff, expected):
    assert client_address(peer, forwarded, xff, LB) == expected


def test_without_trusted_proxies_headers_never_count():
    assert client_address("10.0.0.5", ["for=1.2.3.4"], ["5.6.7.8"], NO_PROXIES) == "10.0.0.5"
    assert not NO_PROXIES and LB


def test_addresses_and_unix_peers():
    assert client_address(IPv4Address("TCP", "192.0.2.9", 1)) == "192.0.2.9"
    assert client_address(UNIXAddress(None)) == "unix"
    assert forwarded_for([""], ["a, b"]) == ["a", "b"]


def test_a_bad_trusted_entry_is_an_error():
    with pytest.raises(ValueError):
        TrustedProxies(["balancer.example"])


class Recorder(Protocol):
    def connectionMade(self):
        self.factory.made.append(self.transport.getPeer())
        self.received = b""

    def dataReceived(self, data):
        self.received += data


def listener(trusted=LB):
    inner = Factory.forProtocol(Recorder)
    inner.made = []
    clock = MemoryReactorClock()
    factory = ProxyProtocolFactory(clock, inner, trusted)
    return clock, inner, factory


def connect(factory, source="10.0.0.5"):
    protocol = factory.buildProtocol(IPv4Address("TCP", source, 5000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", source, 5000))
    protocol.makeConnection(transport)
    return protocol, transport


V1 = b"PROXY TCP4 203.0.113.5 10.0.0.1 40000 6080\r\n"
V2 = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([203, 0, 113, 6, 10, 0, 0, 1])
      + b"\x9c\x40\x17\xc0")


@pytest.mark.parametrize("header,client", [(V1, "203.0.113.5"), (V2, "203.0.113.6")])
def test_the_listener_starts_once_the_header_is_in_byte_by_byte(header, client):
    """Fed byte by byte, the listener's protocol starts with the header's last byte, with the
    client as its peer, and gets the bytes that follow."""
    _, inner, factory = listener()
    protocol, _ = connect(factory)
    for byte in header[:-1]:
        protocol.dataReceived(bytes([byte]))
    assert inner.made == []
    protocol.dataReceived(header[-1:])
    assert [a.host for a in inner.made] == [client]
    protocol.dataReceived(b"GET /")
    assert protocol.wrappedProtocol.received == b"GET /"


def test_bytes_after_the_header_in_one_chunk_reach_the_listener_whole():
    _, inner, factory = listener()
    protocol, _ = connect(factory)
    protocol.dataReceived(V1 + b"GET / HTTP/1.1\r\n")
    assert protocol.wrappedProtocol.received == b"GET / HTTP/1.1\r\n"


def test_an_untrusted_address_is_cut_before_it_can_send_a_header():
    _, inner, factory = listener()
    protocol, transport = connect(factory, source="192.0.2.1")
    protocol.dataReceived(V1)
    assert transport.disconnecting or transport.disconnected
    assert inner.made == []


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n\r\n", b"PROXY garbage\r\n",
                                  b"PROXY TCP4 " + b"1" * 200])
def test_no_valid_header_is_cut(data):
    _, inner, factory = listener()
    protocol, transport = connect(factory)
    protocol.dataReceived(data)
    assert transport.disconnecting or transport.disconnected
    assert inner.made == []


def test_a_header_that_never_ends_is_cut_at_the_bound():
    _, inner, factory = listener()
    protocol, transport = connect(factory)
    protocol.dataReceived(V2[:14] + b"\xff\xff")  # announces 64 KiB of TLVs
    protocol.dataReceived(b"\0" * MAX_HEADER)
    assert transport.disconnecting or transport.disconnected
    assert inner.made == []


def test_a_silent_proxy_connection_is_cut_after_the_header_timeout():
    clock, inner, factory = listener()
    protocol, transport = connect(factory)
    clock.advance(HEADER_TIMEOUT - 0.1)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting or transport.disconnected
    protocol.connectionLost(None)
    assert inner.made == []
