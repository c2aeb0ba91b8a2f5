"""
[vnc] connect = graphics-fd over real sockets: the session's connection to the VNC server is the
socket the hypervisor hands over (a UNIX socket pair here, its other end a fake VNC server that
offers security None, as QEMU does on libvirt's SKIPAUTH socket), never the TCP port; when the
hypervisor cannot hand one over, the session connects over TCP with the password, once logged.
"""

import socket

import pytest_twisted
from twisted.internet import reactor, threads
from twisted.logger import globalLogPublisher

from tests.support.fakevnc import FakeVncFactory
from tests.support.viewer import RfbViewer, WebSocketPipe, open_websocket
from vncproxy.hypervisor import DomainState, GraphicsUnavailable

in_thread = threads.deferToThread


def open_session(proxy):
    url = proxy.href(proxy.granted())
    viewer = RfbViewer(WebSocketPipe(open_websocket(url)))
    name = viewer.handshake().name
    viewer.framebuffer_update()
    viewer.pipe.close()
    return name


@pytest_twisted.inlineCallbacks
def test_sessions_use_the_socket_the_hypervisor_hands_over(make_proxy):
    proxy = make_proxy()  # the default: graphics-fd (libvirt local, no VeNCrypt)
    assert proxy.service.ctx.vnc_connect == "graphics-fd"
    behind_fd = FakeVncFactory(password=None, name="vm behind the fd")
    handed = []

    def graphics(uuid):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        reactor.adoptStreamConnection(theirs.fileno(), socket.AF_UNIX, behind_fd)
        theirs.close()
        handed.append(uuid)
        return ours.detach()  # the session owns it now

    proxy.hypervisor.graphics = graphics
    name = yield in_thread(open_session, proxy)
    assert name == "vm behind the fd"
    assert handed == ["6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"]
    assert proxy.vnc.messages == []  # the TCP VNC server saw nothing
    assert any(m[0] == 3 for m in behind_fd.messages)


@pytest_twisted.inlineCallbacks
def test_without_a_graphics_socket_the_session_falls_back_to_tcp(make_proxy):
    proxy = make_proxy()
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        name = yield in_thread(open_session, proxy)  # the fake, like libvirt's test driver,
    finally:                                         # hands over no socket
        globalLogPublisher.removeObserver(events.append)
    assert name == "fake vm"
    lines = [e for e in events if "connecting over tcp" in e.get("log_format", "")]
    assert len(lines) == 1 and "not supported" in lines[0]["error"]


@pytest_twisted.inlineCallbacks
def test_a_refused_domain_connects_over_tcp_until_it_starts_again(make_proxy):
    """
    Once libvirt gave a domain no socket, its next sessions connect over TCP without asking
    again (nor logging again); after the domain restarts, libvirt is asked again.
    """
    proxy = make_proxy()
    asked = []

    def no_socket(uuid):
        asked.append(uuid)
        raise GraphicsUnavailable("QEMU refused")

    proxy.hypervisor.graphics = no_socket
    for _ in range(3):
        assert (yield in_thread(open_session, proxy)) == "fake vm"
    assert len(asked) == 1
    proxy.hypervisor.set_state("vm1", DomainState.SHUTOFF)
    proxy.hypervisor.set_state("vm1", DomainState.RUNNING)
    assert (yield in_thread(open_session, proxy)) == "fake vm"
    assert len(asked) == 2
    proxy.hypervisor.reconnected()  # libvirtd restarted: perhaps upgraded, asked again
    assert (yield in_thread(open_session, proxy)) == "fake vm"
    assert len(asked) == 3


@pytest_twisted.inlineCallbacks
def test_tcp_mode_never_asks_for_a_socket(make_proxy):
    proxy = make_proxy(vnc_connect="tcp")
    proxy.hypervisor.graphics = lambda uuid: 1 / 0
    assert proxy.service.ctx.vnc_connect == "tcp"
    name = yield in_thread(open_session, proxy)
    assert name == "fake vm"
