"""
The VNC console path in one process over real sockets: token API -> WebSocket -> RFB handshakes
-> relay, with a fake hypervisor and a fake VNC server (the e2e suite does the same with QEMU).
Client code is blocking and runs in a thread while the reactor serves.
"""

import pytest
import pytest_twisted
import websocket
from twisted.internet import threads
from twisted.logger import globalLogPublisher

from tests.support import api
from tests.support.fakevnc import HEIGHT, WIDTH, pattern
from tests.support.viewer import PipeClosed, RfbRefused, RfbViewer, WebSocketPipe, open_websocket
from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import DomainState
from vncproxy.web.errors import error_message

in_thread = threads.deferToThread


def grant_and_open(proxy, instance="vm1", url_of=None, **ws_kwargs):
    status, body = api.grant(proxy.api_url, proxy.key, instance)
    assert status == 200, body
    url = url_of(body) if url_of else body["href"].replace(
        proxy.service.ctx.config.websocket_base_url, proxy.ws_url)
    return body, open_websocket(url, **ws_kwargs)


@pytest_twisted.inlineCallbacks
def test_token_opens_the_vms_screen(proxy):
    """A granted token opens a WebSocket whose RFB handshake reaches the VM's ServerInit and pixels."""
    def scenario():
        body, ws = grant_and_open(proxy)
        viewer = RfbViewer(WebSocketPipe(ws))
        init = viewer.handshake((3, 8), shared=False)
        rects = viewer.framebuffer_update()
        ws.close()
        return body, init, rects
    body, init, rects = yield in_thread(scenario)
    assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "fake vm")
    assert rects == [((0, 0, WIDTH, HEIGHT), pattern())]
    assert set(body) == {"access_token", "console_type", "created_at", "expires_at", "force", "href",
                         "password", "vnc_url"}
    assert body["vnc_url"] == proxy.service.ctx.config.native_vnc_url(body["password"])
    assert body["href"].startswith(proxy.service.ctx.config.websocket_base_url
                                   + "/v1/instances/6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69/console?access_token=")


@pytest_twisted.inlineCallbacks
def test_proxy_authenticates_upstream_and_forces_shared(proxy):
    """The proxy answered the VM's VNC password challenge itself and sent shared=1 for an exclusive viewer."""
    def scenario():
        _, ws = grant_and_open(proxy)
        RfbViewer(WebSocketPipe(ws)).handshake((3, 8), shared=False)
        ws.close()
    yield in_thread(scenario)
    assert proxy.vnc.failures == []
    assert proxy.vnc.messages == [] or proxy.vnc.messages[0][0] in (0, 2, 3)


@pytest_twisted.inlineCallbacks
def test_shared_flag_forced_to_one(proxy):
    """Whatever the viewer asks, QEMU's ClientInit says shared."""
    seen = []

    def scenario():
        _, ws = grant_and_open(proxy)
        RfbViewer(WebSocketPipe(ws)).handshake((3, 8), shared=False)
        seen.extend(c.shared for c in proxy.vnc.connections)
        ws.close()
    yield in_thread(scenario)
    assert seen == [True]


@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
@pytest_twisted.inlineCallbacks
def test_every_rfb_version_reaches_server_init(proxy, version):
    """Viewers speaking RFB 3.3, 3.7 and 3.8 all get ServerInit."""
    def scenario():
        _, ws = grant_and_open(proxy)
        init = RfbViewer(WebSocketPipe(ws)).handshake(version)
        ws.close()
        return init
    init = yield in_thread(scenario)
    assert init.width == WIDTH


@pytest_twisted.inlineCallbacks
def test_nova_paths_and_cookie_carry_the_token(proxy):
    """/websockify?token=, /?token= and a token cookie all open the console."""
    def scenario():
        results = []
        for make in (
            lambda t: dict(url=f"{proxy.ws_url}/websockify?token={t}"),
            lambda t: dict(url=f"{proxy.ws_url}/?token={t}"),
            lambda t: dict(url=f"{proxy.ws_url}/websockify", cookie=f"token={t}"),
        ):
            status, body = api.grant(proxy.api_url, proxy.key, "vm1")
            kwargs = make(body["access_token"])
            ws = open_websocket(kwargs.pop("url"), **kwargs)
            results.append(RfbViewer(WebSocketPipe(ws)).handshake().width)
            ws.close()
        return results
    assert (yield in_thread(scenario)) == [WIDTH] * 3


@pytest_twisted.inlineCallbacks
def test_subprotocol_binary_selected_only_when_offered(proxy):
    """Offering binary selects binary; offering nothing selects nothing and still works."""
    def scenario():
        _, offered = grant_and_open(proxy, subprotocols=["binary", "base64"])
        _, none = grant_and_open(proxy)
        result = (offered.getsubprotocol(), none.getsubprotocol())
        offered.close()
        none.close()
        return result
    assert (yield in_thread(scenario)) == ("binary", None)


def refused_status(url, **kwargs):
    try:
        ws = open_websocket(url, **kwargs)
    except websocket.WebSocketBadStatusException as e:
        return e.status_code
    ws.close()
    return 101


@pytest_twisted.inlineCallbacks
def test_reused_wrong_and_foreign_tokens_are_refused_before_upgrade(proxy):
    """A used token, an unknown token and a token for another instance get HTTP 401."""
    def scenario():
        body, ws = grant_and_open(proxy)
        ws.close()
        token = body["access_token"]
        _, other = api.grant(proxy.api_url, proxy.key, "vm1")
        return [
            refused_status(f"{proxy.ws_url}/websockify?token={token}"),
            refused_status(f"{proxy.ws_url}/websockify?token=not-a-token"),
            refused_status(f"{proxy.ws_url}/websockify"),
            refused_status(f"{proxy.ws_url}/v1/instances/off1/console?access_token={other['access_token']}"),
        ]
    assert (yield in_thread(scenario)) == [401, 401, 401, 401]


@pytest_twisted.inlineCallbacks
def test_foreign_origin_is_refused(proxy):
    """A browser Origin other than the listener's own gets 403; the same origin is allowed."""
    def scenario():
        _, body = api.grant(proxy.api_url, proxy.key, "vm1")
        evil = refused_status(f"{proxy.ws_url}/websockify?token={body['access_token']}",
                              origin="https://evil.example")
        _, body = api.grant(proxy.api_url, proxy.key, "vm1")
        own = refused_status(f"{proxy.ws_url}/websockify?token={body['access_token']}",
                             origin=proxy.ws_url.replace("ws://", "http://"))
        return evil, own
    assert (yield in_thread(scenario)) == (403, 101)


@pytest_twisted.inlineCallbacks
def test_origin_refusal_does_not_burn_the_token(proxy):
    """A refused Origin is checked before the token is consumed, so the token still works."""
    def scenario():
        _, body = api.grant(proxy.api_url, proxy.key, "vm1")
        url = f"{proxy.ws_url}/websockify?token={body['access_token']}"
        return refused_status(url, origin="https://evil.example"), refused_status(url)
    assert (yield in_thread(scenario)) == (403, 101)


@pytest_twisted.inlineCallbacks
def test_third_vnc_session_is_refused(proxy):
    """Two VNC sessions per instance; a third grant gets 409 and so does a third connection."""
    def scenario():
        opened = [grant_and_open(proxy)[1] for _ in range(2)]
        viewers = [RfbViewer(WebSocketPipe(ws)) for ws in opened]
        for v in viewers:
            v.handshake()
        status, body = api.grant(proxy.api_url, proxy.key, "vm1")
        for ws in opened:
            ws.close()
        return status, body
    status, body = yield in_thread(scenario)
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


@pytest_twisted.inlineCallbacks
def test_wrong_vm_password_is_reported_to_the_viewer(proxy):
    """When the VM refuses the proxy's password, the viewer gets an RFB failure naming it, then close code 4009."""
    proxy.vnc.password = b"other"

    def scenario():
        _, ws = grant_and_open(proxy)
        viewer = RfbViewer(WebSocketPipe(ws))
        first = close_of(viewer.handshake)
        second = close_of(lambda: viewer.read(1))
        return first, second
    first, second = yield in_thread(scenario)
    assert first[0] == "refused" and "authentication failed" in first[1].lower()
    assert second[0] == CloseCode.CONSOLE_UNAVAILABLE


@pytest_twisted.inlineCallbacks
def test_unreachable_vnc_server_is_reported(proxy):
    """A VM whose VNC port does not answer yields a clear refusal, not a hang."""
    from tests.integration.conftest import free_port
    from vncproxy.hypervisor import VncEndpoint
    proxy.hypervisor.set_consoles("vm1", vnc=VncEndpoint(host="127.0.0.1", port=free_port(),
                                                         password="secret1"))

    def scenario():
        _, ws = grant_and_open(proxy)
        viewer = RfbViewer(WebSocketPipe(ws))
        return close_of(viewer.handshake), close_of(lambda: viewer.read(1))
    first, second = yield in_thread(scenario)
    assert first == ("refused", "cannot reach the VM's VNC server")
    assert second[0] == CloseCode.CONSOLE_UNAVAILABLE


@pytest_twisted.inlineCallbacks
def test_power_off_closes_sessions(proxy):
    """When the instance stops, its sessions close with code 4007."""
    from twisted.internet import reactor

    def scenario():
        _, ws = grant_and_open(proxy)
        viewer = RfbViewer(WebSocketPipe(ws))
        viewer.handshake()
        threads.blockingCallFromThread(
            reactor, proxy.hypervisor.set_state, "vm1", DomainState.SHUTOFF)
        return close_of(lambda: viewer.read(1))
    closed = yield in_thread(scenario)
    assert closed == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    assert proxy.service.ctx.sessions.sessions() == []


@pytest_twisted.inlineCallbacks
def test_bytes_relay_both_ways_unchanged(proxy):
    """After the handshake, client messages reach the VM byte for byte."""
    import struct

    def scenario():
        _, ws = grant_and_open(proxy)
        viewer = RfbViewer(WebSocketPipe(ws))
        viewer.handshake()
        key_down = struct.pack("!BBxxI", 4, 1, 0x61)
        pointer = struct.pack("!BBHH", 5, 1, 3, 4)
        viewer.pipe.send(key_down + pointer[:3])
        viewer.pipe.send(pointer[3:])
        viewer.framebuffer_update()
        ws.close()
        return key_down, pointer
    key_down, pointer = yield in_thread(scenario)
    assert proxy.vnc.messages[:2] == [key_down, pointer]


@pytest_twisted.inlineCallbacks
def test_no_secret_reaches_the_log(proxy):
    """Neither a token nor the VM's VNC password appears in any log event."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        def scenario():
            body, ws = grant_and_open(proxy)
            RfbViewer(WebSocketPipe(ws)).handshake()
            ws.close()
            refused_status(f"{proxy.ws_url}/websockify?token={body['access_token']}")
            return body["access_token"]
        token = yield in_thread(scenario)
    finally:
        globalLogPublisher.removeObserver(events.append)
    from twisted.logger import formatEvent
    text = "\n".join(formatEvent(e) + repr(e) for e in events)
    assert "vnc session" in text  # the observer did see the session's events
    assert token not in text
    assert "secret1" not in text


@pytest_twisted.inlineCallbacks
def test_vnc_server_dropping_with_vm_stopped_says_instance_stopped(proxy):
    """When QEMU's connection drops and the VM is off, the viewer gets 4007, not a bare 'closed'."""
    from twisted.internet import reactor

    def stop_vm():
        proxy.hypervisor.set_state("vm1", DomainState.SHUTOFF, emit=False)  # event comes late
        for connection in list(proxy.vnc.connections):
            connection.transport.loseConnection()

    def scenario():
        _, ws = grant_and_open(proxy)
        viewer = RfbViewer(WebSocketPipe(ws))
        viewer.handshake()
        threads.blockingCallFromThread(reactor, stop_vm)
        return close_of(lambda: viewer.read(1))
    assert (yield in_thread(scenario)) == (CloseCode.INSTANCE_STOPPED, "instance stopped")


@pytest_twisted.inlineCallbacks
def test_vnc_server_dropping_with_vm_running_says_console_closed(proxy):
    """When QEMU's connection drops but the VM runs on, the viewer gets 4010 with a reason."""
    from twisted.internet import reactor

    def scenario():
        _, ws = grant_and_open(proxy)
        viewer = RfbViewer(WebSocketPipe(ws))
        viewer.handshake()
        threads.blockingCallFromThread(
            reactor, lambda: [c.transport.loseConnection() for c in list(proxy.vnc.connections)])
        return close_of(lambda: viewer.read(1))
    code, reason = yield in_thread(scenario)
    assert code == CloseCode.CONSOLE_CLOSED
    assert reason == "console closed: VNC server closed the connection"
