"""
Handshake time-outs and bounded buffers of a VNC session, in one process over real sockets: a
stalled viewer, a stalled VNC server, a viewer that will not read its refusal, and peers that
send too much before the relay starts.
"""

import dataclasses
import time

import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.protocol import Factory, Protocol

from tests.support import api
from tests.support.viewer import PipeClosed, RfbRefused, RfbViewer, WebSocketPipe, open_websocket
from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import VncEndpoint

in_thread = threads.deferToThread


def shorten(proxy, seconds):
    ctx = proxy.service.ctx
    ctx.config = dataclasses.replace(ctx.config, vnc_handshake_timeout=seconds)


def open_console(proxy):
    status, body = api.grant(proxy.api_url, proxy.key, "vm1")
    assert status == 200, body
    url = body["href"].replace(proxy.service.ctx.config.websocket_base_url, proxy.ws_url)
    return WebSocketPipe(open_websocket(url))


def close_code(pipe):
    """Read until the close frame; return its (code, reason)."""
    try:
        while True:
            pipe.recv()
    except PipeClosed as closed:
        return closed.args[0]


class _Silent(Protocol):
    """A VNC server that accepts the connection and never says a word."""


class _Chatty(Protocol):
    """A VNC server that greets with a version and then floods."""

    def connectionMade(self):
        self.transport.write(b"RFB 003.008\n" + b"\x01" * 70000)


def serve(protocol_class):
    factory = Factory.forProtocol(protocol_class)
    return reactor.listenTCP(0, factory, interface="127.0.0.1")


@pytest_twisted.inlineCallbacks
def test_viewer_stalling_mid_handshake_is_closed(proxy):
    """A viewer that takes the greeting and never answers is closed with 4011 after the time-out."""
    shorten(proxy, 0.5)

    def scenario():
        pipe = open_console(proxy)
        started = time.monotonic()
        assert pipe.recv() == b"RFB 003.008\n"
        return close_code(pipe), time.monotonic() - started
    (code, reason), waited = yield in_thread(scenario)
    assert code == CloseCode.PROTOCOL_ERROR and reason == "protocol error: handshake timed out"
    assert waited < 3


@pytest_twisted.inlineCallbacks
def test_vnc_server_stalling_is_reported(proxy):
    """A VNC server that accepts but never speaks gives the viewer a refusal naming the time-out."""
    listener = serve(_Silent)
    proxy.hypervisor.set_consoles("vm1", vnc=VncEndpoint(host="127.0.0.1",
                                                         port=listener.getHost().port))
    shorten(proxy, 0.5)

    def scenario():
        viewer = RfbViewer(open_console(proxy))
        try:
            viewer.handshake()
        except RfbRefused as e:
            return str(e), close_code(viewer.pipe)
    try:
        reason, (code, _) = yield in_thread(scenario)
    finally:
        yield listener.stopListening()
    assert reason == "timed out connecting to the VNC server"
    assert code == CloseCode.CONSOLE_UNAVAILABLE


@pytest_twisted.inlineCallbacks
def test_viewer_ignoring_its_refusal_is_closed(proxy):
    """A viewer that never answers the greeting of a refusal is still closed (no session left behind)."""
    listener = serve(_Silent)
    proxy.hypervisor.set_consoles("vm1", vnc=VncEndpoint(host="127.0.0.1",
                                                         port=listener.getHost().port))
    shorten(proxy, 0.3)

    def scenario():
        pipe = open_console(proxy)
        started = time.monotonic()
        return close_code(pipe), time.monotonic() - started
    try:
        (code, _), waited = yield in_thread(scenario)
    finally:
        yield listener.stopListening()
    assert code == CloseCode.CONSOLE_UNAVAILABLE and waited < 3
    assert proxy.service.ctx.sessions.sessions() == []


@pytest_twisted.inlineCallbacks
def test_viewer_flooding_while_the_proxy_connects_is_not_read(proxy):
    """While the proxy waits for the VNC server the viewer is paused: its flood stays unread until the time-out."""
    listener = serve(_Silent)
    proxy.hypervisor.set_consoles("vm1", vnc=VncEndpoint(host="127.0.0.1",
                                                         port=listener.getHost().port))
    shorten(proxy, 0.5)

    def scenario():
        pipe = open_console(proxy)
        pipe.send(b"\0" * 70000)
        return close_code(pipe)
    try:
        code, reason = yield in_thread(scenario)
    finally:
        yield listener.stopListening()
    assert code == CloseCode.CONSOLE_UNAVAILABLE
    assert reason == "console unavailable: timed out connecting to the VNC server"


@pytest_twisted.inlineCallbacks
def test_vnc_server_flooding_the_handshake_is_refused(proxy):
    """A VNC server sending more than the handshake's buffer cap is refused as a protocol error."""
    listener = serve(_Chatty)
    proxy.hypervisor.set_consoles("vm1", vnc=VncEndpoint(host="127.0.0.1",
                                                         port=listener.getHost().port))

    def scenario():
        viewer = RfbViewer(open_console(proxy))
        try:
            viewer.handshake()
        except RfbRefused as e:
            return str(e)
    try:
        reason = yield in_thread(scenario)
    finally:
        yield listener.stopListening()
    assert reason.startswith("protocol error")
