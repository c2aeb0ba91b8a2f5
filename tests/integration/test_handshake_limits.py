"""
Handshake time-outs and bounded buffers of a VNC session: a stalled viewer, a stalled VNC
server, a viewer that will not read its refusal, and peers that send too much before the relay
starts.

On the memory tier (L{tests.support.memory}): the VNC servers listen on the in-memory network
and a time-out is exactly the clock time that passed while the viewer waited.
"""

from twisted.internet.protocol import Factory, Protocol

from tests.support.viewer import RfbRefused, RfbViewer, until_closed
from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import VncEndpoint


def open_console(proxy):
    return proxy.websocket_pipe(proxy.href(proxy.granted()))


class _Silent(Protocol):
    """A VNC server that accepts the connection and never says a word."""


class _Chatty(Protocol):
    """A VNC server that greets with a version and then floods."""

    def connectionMade(self):
        self.transport.write(b"RFB 003.008\n" + b"\x01" * 70000)


def serve(proxy, protocol_class):
    """vm1's VNC server is now C{protocol_class}'s."""
    port = proxy.serve(Factory.forProtocol(protocol_class))
    proxy.hypervisor.set_consoles("vm1", vnc=VncEndpoint(host="127.0.0.1", port=port))


def test_viewer_stalling_mid_handshake_is_closed(memory_proxy):
    """A viewer that takes the greeting and never answers is closed with 4011 after the time-out."""
    proxy = memory_proxy
    proxy.reconfigure(vnc_handshake_timeout=0.5)
    pipe = open_console(proxy)
    started = proxy.reactor.seconds()
    assert pipe.recv() == b"RFB 003.008\n"
    code, reason = until_closed(pipe)
    assert code == CloseCode.PROTOCOL_ERROR and reason == "protocol error: handshake timed out"
    assert 0.5 <= proxy.reactor.seconds() - started < 1


def test_vnc_server_stalling_is_reported(memory_proxy):
    """A VNC server that accepts but never speaks gives the viewer a refusal naming the time-out."""
    proxy = memory_proxy
    serve(proxy, _Silent)
    proxy.reconfigure(vnc_handshake_timeout=0.5)
    viewer = RfbViewer(open_console(proxy))
    try:
        viewer.handshake()
    except RfbRefused as e:
        reason = str(e)
    code, _ = until_closed(viewer.pipe)
    assert reason == "timed out connecting to the VNC server"
    assert code == CloseCode.CONSOLE_UNAVAILABLE


def test_viewer_ignoring_its_refusal_is_closed(memory_proxy):
    """A viewer that never answers the greeting of a refusal is still closed (no session left behind)."""
    proxy = memory_proxy
    serve(proxy, _Silent)
    proxy.reconfigure(vnc_handshake_timeout=0.3)
    pipe = open_console(proxy)
    started = proxy.reactor.seconds()
    code, _ = until_closed(pipe)
    assert code == CloseCode.CONSOLE_UNAVAILABLE and proxy.reactor.seconds() - started < 3
    assert proxy.service.ctx.sessions.sessions() == []


def test_viewer_flooding_while_the_proxy_connects_is_not_read(memory_proxy):
    """While the proxy waits for the VNC server the viewer is paused: its flood stays unread until the time-out."""
    proxy = memory_proxy
    serve(proxy, _Silent)
    proxy.reconfigure(vnc_handshake_timeout=0.5)
    pipe = open_console(proxy)
    pipe.send(b"\0" * 70000)
    code, reason = until_closed(pipe)
    assert code == CloseCode.CONSOLE_UNAVAILABLE
    assert reason == "console unavailable: timed out connecting to the VNC server"


def test_vnc_server_flooding_the_handshake_is_refused(memory_proxy):
    """A VNC server sending more than the handshake's buffer cap is refused as a protocol error."""
    proxy = memory_proxy
    serve(proxy, _Chatty)
    with_reason = RfbViewer(open_console(proxy))
    try:
        with_reason.handshake()
    except RfbRefused as e:
        reason = str(e)
    assert reason.startswith("protocol error")
