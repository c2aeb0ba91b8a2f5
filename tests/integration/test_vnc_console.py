"""
The VNC console path: token API -> WebSocket -> RFB handshakes -> relay, with a fake hypervisor
and a fake VNC server (the e2e suite does the same with QEMU). The viewer is the independent
blocking RFB client of tests/support/viewer.py.

On the memory tier (L{tests.support.memory}), except the first test, which keeps the console
listener honest over real sockets (client code blocking in a thread while the reactor serves).
"""

import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.logger import formatEvent, globalLogPublisher

from tests.support import api, viewer
from tests.support.fakevnc import HEIGHT, WIDTH, pattern
from tests.support.viewer import PipeClosed, RfbRefused, RfbViewer
from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import DomainState, VncEndpoint
from vncproxy.web.errors import error_message


@pytest_twisted.inlineCallbacks
def test_token_opens_the_vms_screen(proxy):
    """A granted token opens a WebSocket whose RFB handshake reaches the VM's ServerInit and pixels."""
    def scenario():
        status, body = api.grant(proxy.api_url, proxy.key, "vm1")
        assert status == 200, body
        ws = viewer.open_websocket(body["href"].replace(proxy.service.ctx.config.websocket_base_url,
                                                        proxy.ws_url))
        rfb = RfbViewer(viewer.WebSocketPipe(ws))
        init = rfb.handshake((3, 8), shared=False)
        rects = rfb.framebuffer_update()
        # Nagle is off on the viewer's socket, a keystroke's echo never waits for an ACK (the
        # newest twisted.web switches it off; Debian 12's leaves it on: vncproxy.nodelay)
        nagle = [c.transport.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                 for c in list(proxy.service._console_factory.connections)]
        ws.close()
        return body, init, rects, nagle
    body, init, rects, nagle = yield threads.deferToThread(scenario)
    assert nagle and all(nagle), nagle
    assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "fake vm")
    assert rects == [((0, 0, WIDTH, HEIGHT), pattern())]
    assert set(body) == {"access_token", "console_type", "created_at", "expires_at", "force", "href",
                         "password", "vnc_url"}
    assert body["vnc_url"] == proxy.service.ctx.config.native_vnc_url(body["password"])
    assert body["href"].startswith(proxy.service.ctx.config.websocket_base_url
                                   + "/v1/instances/6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69/console?access_token=")


def open_viewer(proxy, **options):
    """A granted vm1 console, opened: (grant body, RfbViewer before its handshake)."""
    body = proxy.granted()
    return body, RfbViewer(proxy.websocket_pipe(proxy.href(body), **options))


def test_proxy_authenticates_upstream_and_forces_shared(memory_proxy):
    """The proxy answered the VM's VNC password challenge itself and sent shared=1 for an exclusive viewer."""
    proxy = memory_proxy
    _, rfb = open_viewer(proxy)
    init = rfb.handshake((3, 8), shared=False)
    shared = [c.shared for c in proxy.vnc.connections]
    rfb.pipe.close()
    assert init.name == "fake vm"
    assert proxy.vnc.failures == []
    assert shared == [True]


@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
def test_every_rfb_version_reaches_server_init(memory_proxy, version):
    """Viewers speaking RFB 3.3, 3.7 and 3.8 all get ServerInit and the VM's pixels."""
    _, rfb = open_viewer(memory_proxy)
    init = rfb.handshake(version)
    rects = rfb.framebuffer_update()
    rfb.pipe.close()
    assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "fake vm")
    assert rects == [((0, 0, WIDTH, HEIGHT), pattern())]


def test_nova_paths_and_cookie_carry_the_token(memory_proxy):
    """/websockify?token=, /?token= and a token cookie all open the console."""
    proxy = memory_proxy
    widths = []
    for make in (
        lambda t: dict(url=f"{proxy.ws_url}/websockify?token={t}"),
        lambda t: dict(url=f"{proxy.ws_url}/?token={t}"),
        lambda t: dict(url=f"{proxy.ws_url}/websockify", cookie=f"token={t}"),
    ):
        options = make(proxy.granted()["access_token"])
        pipe = proxy.websocket_pipe(options.pop("url"), **options)
        widths.append(RfbViewer(pipe).handshake().width)
        pipe.close()
    assert widths == [WIDTH] * 3


def test_subprotocol_binary_selected_only_when_offered(memory_proxy):
    """Offering binary selects binary; offering nothing selects nothing and still works."""
    proxy = memory_proxy
    offered = proxy.websocket_pipe(proxy.href(proxy.granted()), protocols=["binary", "base64"])
    none = proxy.websocket_pipe(proxy.href(proxy.granted()))
    name = RfbViewer(none).handshake().name
    assert (offered.viewer.subprotocol, none.viewer.subprotocol) == ("binary", None)
    assert name == "fake vm"


def test_reused_wrong_and_foreign_tokens_are_refused_before_upgrade(memory_proxy):
    """A used token, an unknown token, no token and a token for another instance get HTTP 401."""
    proxy = memory_proxy
    body, rfb = open_viewer(proxy)
    rfb.pipe.close()
    other = proxy.granted()
    statuses = [proxy.refusal(url)[0] for url in (
        f"{proxy.ws_url}/websockify?token={body['access_token']}",
        f"{proxy.ws_url}/websockify?token=not-a-token",
        f"{proxy.ws_url}/websockify",
        f"{proxy.ws_url}/v1/instances/off1/console?access_token={other['access_token']}",
    )]
    assert statuses == [401, 401, 401, 401]


def test_foreign_origin_is_refused(memory_proxy):
    """A browser Origin other than the listener's own gets 403; the same origin is allowed."""
    proxy = memory_proxy
    evil = proxy.refusal(f"{proxy.ws_url}/websockify?token={proxy.granted()['access_token']}",
                         origin="https://evil.example")
    own = proxy.refusal(f"{proxy.ws_url}/websockify?token={proxy.granted()['access_token']}",
                        origin=proxy.ws_url.replace("ws://", "http://"))
    assert (evil[0], own[0]) == (403, 101)


def test_origin_refusal_does_not_burn_the_token(memory_proxy):
    """A refused Origin is checked before the token is consumed, so the token still works."""
    proxy = memory_proxy
    url = f"{proxy.ws_url}/websockify?token={proxy.granted()['access_token']}"
    evil = proxy.refusal(url, origin="https://evil.example")[0]
    assert (evil, proxy.refusal(url)[0]) == (403, 101)


def test_third_vnc_session_is_refused(memory_proxy):
    """Two VNC sessions per instance; a third grant gets 409."""
    proxy = memory_proxy
    viewers = [open_viewer(proxy)[1] for _ in range(2)]
    for rfb in viewers:
        rfb.handshake()
    status, body = proxy.grant("vm1")
    for rfb in viewers:
        rfb.pipe.close()
    assert status == 409
    assert "limit" in error_message(body)[1]


def close_of(viewer_fn):
    try:
        viewer_fn()
    except PipeClosed as e:
        return e.args[0]
    except RfbRefused as e:
        return ("refused", str(e))
    return None


def test_wrong_vm_password_is_reported_to_the_viewer(memory_proxy):
    """When the VM refuses the proxy's password, the viewer gets an RFB failure naming it, then close code 4009."""
    proxy = memory_proxy
    proxy.vnc.password = b"other"
    _, rfb = open_viewer(proxy)
    first = close_of(rfb.handshake)
    second = close_of(lambda: rfb.read(1))
    assert first[0] == "refused" and "authentication failed" in first[1].lower()
    assert second[0] == CloseCode.CONSOLE_UNAVAILABLE


def test_unreachable_vnc_server_is_reported(memory_proxy):
    """A VM whose VNC port does not answer yields a clear refusal, not a hang."""
    proxy = memory_proxy
    proxy.hypervisor.set_consoles("vm1", vnc=VncEndpoint(host="127.0.0.1", port=15999,
                                                         password="secret1"))
    _, rfb = open_viewer(proxy)
    first, second = close_of(rfb.handshake), close_of(lambda: rfb.read(1))
    assert first == ("refused", "cannot reach the VM's VNC server")
    assert second[0] == CloseCode.CONSOLE_UNAVAILABLE


def test_power_off_closes_sessions(memory_proxy):
    """When the instance stops, its sessions close with code 4007."""
    proxy = memory_proxy
    _, rfb = open_viewer(proxy)
    rfb.handshake()
    proxy.hypervisor.set_state("vm1", DomainState.SHUTOFF)
    assert close_of(lambda: rfb.read(1)) == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    assert proxy.service.ctx.sessions.sessions() == []


def test_bytes_relay_both_ways_unchanged(memory_proxy):
    """After the handshake, client messages reach the VM byte for byte (split anywhere)."""
    proxy = memory_proxy
    _, rfb = open_viewer(proxy)
    rfb.handshake()
    key_down = struct.pack("!BBxxI", 4, 1, 0x61)
    pointer = struct.pack("!BBHH", 5, 1, 3, 4)
    rfb.pipe.send(key_down + pointer[:3])
    rfb.pipe.send(pointer[3:])
    rects = rfb.framebuffer_update()
    rfb.pipe.close()
    assert proxy.vnc.messages[:2] == [key_down, pointer]
    assert rects == [((0, 0, WIDTH, HEIGHT), pattern())]


def test_no_secret_reaches_the_log(memory_proxy):
    """Neither a token nor the VM's VNC password appears in any log event."""
    proxy = memory_proxy
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        body, rfb = open_viewer(proxy)
        rfb.handshake()
        rfb.pipe.close()
        proxy.refusal(f"{proxy.ws_url}/websockify?token={body['access_token']}")
    finally:
        globalLogPublisher.removeObserver(events.append)
    text = "\n".join(formatEvent(e) + repr(e) for e in events)
    assert "vnc session" in text  # the observer did see the session's events
    assert body["access_token"] not in text
    assert "secret1" not in text


def test_vnc_server_dropping_with_vm_stopped_says_instance_stopped(memory_proxy):
    """When QEMU's connection drops and the VM is off, the viewer gets 4007, not a bare 'closed'."""
    proxy = memory_proxy
    _, rfb = open_viewer(proxy)
    rfb.handshake()
    proxy.hypervisor.set_state("vm1", DomainState.SHUTOFF, emit=False)  # the event comes late
    for connection in list(proxy.vnc.connections):
        connection.transport.loseConnection()
    assert close_of(lambda: rfb.read(1)) == (CloseCode.INSTANCE_STOPPED, "instance stopped")


def test_vnc_server_dropping_with_vm_running_says_console_closed(memory_proxy):
    """When QEMU's connection drops but the VM runs on, the viewer gets 4010 with a reason."""
    proxy = memory_proxy
    _, rfb = open_viewer(proxy)
    rfb.handshake()
    for connection in list(proxy.vnc.connections):
        connection.transport.loseConnection()
    code, reason = close_of(lambda: rfb.read(1))
    assert code == CloseCode.CONSOLE_CLOSED
    assert reason == "console closed: VNC server closed the connection"
