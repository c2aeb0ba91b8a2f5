"""
Which endpoint a VNC session dials for the address libvirt reported.
"""

import pytest
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.testing import MemoryReactorClock

from vncproxy.vncupstream import _tcp_endpoint


@pytest.mark.parametrize("host, kind", [
    ("127.0.0.1", TCP4ClientEndpoint),
    ("10.1.2.3", TCP4ClientEndpoint),
    ("::1", TCP6ClientEndpoint),
    ("fe80::1", TCP6ClientEndpoint),
    ("localhost", HostnameEndpoint),
    ("hv1.example.com", HostnameEndpoint),
])
def test_ip_literals_are_dialled_directly_and_names_resolved(host, kind):
    """An IP literal needs no resolution (a direct TCP endpoint); a name goes to HostnameEndpoint."""
    assert type(_tcp_endpoint(MemoryReactorClock(), host, 5900, 2.0)) is kind


def test_the_connect_timeout_reaches_the_reactor():
    """The configured connect timeout is the one the connection attempt gets."""
    reactor = MemoryReactorClock()
    _tcp_endpoint(reactor, "127.0.0.1", 5901, 3.5).connect(None)
    host, port, _, timeout, _ = reactor.tcpClients[0]
    assert (host, port, timeout) == ("127.0.0.1", 5901, 3.5)


def test_the_connection_to_qemu_logs_no_factory_start_and_stop():
    """One connection to QEMU per session: Twisted's "Starting factory"/"Stopping factory"
    lines would be two log lines per session; its factory is quiet (an ordinary one is not)."""
    from twisted.internet.protocol import Factory, Protocol
    from twisted.logger import globalLogPublisher

    from vncproxy.vncupstream import _Factory as _QemuFactory

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        for factory in (Factory(), _QemuFactory(Protocol())):
            factory.doStart()
            factory.doStop()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e["log_format"] for e in events] == ["Starting factory {factory!r}",
                                                 "Stopping factory {factory!r}"]
    proto = Protocol()
    assert _QemuFactory(proto).buildProtocol(None) is proto
