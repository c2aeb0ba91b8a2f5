"""
View-only VNC over real sockets: a token minted with "read_only": true (IBM body, or Nova's as
our extension) opens a session whose keyboard, mouse and clipboard never reach the VNC server,
while its screen requests do; an interactive session's input does. View-only sessions have
their own limit ([sessions] max_vnc_viewers) beside the interactive one. A client message the
filter cannot size ends the view-only session with 4011.
"""

import struct

import pytest_twisted
from twisted.internet import threads

from tests.support import api
from tests.support.viewer import PipeClosed, RfbViewer, WebSocketPipe, open_websocket
from vncproxy.closecodes import CloseCode

in_thread = threads.deferToThread
KEY = struct.pack("!BBxxI", 4, 1, 0x61)
POINTER = struct.pack("!BBHH", 5, 1, 10, 20)
CUT = struct.pack("!BxxxI", 6, 5) + b"hello"
QEMU_KEY = struct.pack("!BBHII", 255, 0, 1, 0x61, 0x1e)
REQUEST = struct.pack("!BBHHHH", 3, 0, 0, 0, 32, 16)


def viewer(proxy, response):
    url = proxy.href(response)
    v = RfbViewer(WebSocketPipe(open_websocket(url)))
    v.handshake()
    return v


def types_seen(proxy):
    return [m[0] for m in proxy.vnc.messages]


@pytest_twisted.inlineCallbacks
def test_view_only_input_is_dropped_and_screen_requests_pass(proxy):
    """Key, pointer, clipboard and QEMU key events of a view-only viewer are dropped (and
    counted in its close event); its update requests are answered; an interactive viewer's
    input reaches the server."""
    def scenario():
        body = proxy.granted(read_only=True)
        ro = viewer(proxy, body)
        ro.pipe.send(KEY + POINTER + CUT + QEMU_KEY)
        ro.framebuffer_update()  # answered: its SetEncodings and request passed
        seen_ro = types_seen(proxy)
        ro.pipe.close()
        rw = viewer(proxy, proxy.granted())
        rw.pipe.send(KEY + POINTER)
        rw.framebuffer_update()
        seen_all = types_seen(proxy)
        rw.pipe.close()
        return body, seen_ro, seen_all
    body, seen_ro, seen_all = yield in_thread(scenario)
    assert body["read_only"] is True
    assert 2 in seen_ro and 3 in seen_ro
    assert not {4, 5, 6, 255} & set(seen_ro)
    assert seen_all[len(seen_ro):].count(4) == 1 and 5 in seen_all[len(seen_ro):]


@pytest_twisted.inlineCallbacks
def test_view_only_sessions_have_their_own_limit(make_proxy):
    """With max_vnc_sessions=2 and max_vnc_viewers=2: two interactive and two view-only
    sessions run together; a third view-only token is refused (409), and a third interactive
    one too; the inventory shows the modes."""
    proxy = make_proxy(max_vnc_viewers=2)

    def scenario():
        open_ = [viewer(proxy, proxy.granted()), viewer(proxy, proxy.granted()),
                 viewer(proxy, proxy.granted(read_only=True)),
                 viewer(proxy, proxy.granted(read_only=True))]
        third_ro = api.grant(proxy.api_url, proxy.key, "vm1", "vnc", read_only=True)
        third_rw = api.grant(proxy.api_url, proxy.key, "vm1", "vnc")
        status, listed = api.call(f"{proxy.api_url}/v1/instances/vm1/console_sessions",
                                  key=proxy.key)
        for v in open_:
            v.pipe.close()
        return third_ro, third_rw, listed["sessions"]
    third_ro, third_rw, listed = yield in_thread(scenario)
    assert third_ro[0] == 409 and "view-only vnc console limit" in third_ro[1]["errors"][0]["message"]
    assert third_rw[0] == 409
    assert sorted(r["mode"] for r in listed) == ["interactive"] * 2 + ["read_only"] * 2


@pytest_twisted.inlineCallbacks
def test_nova_body_takes_read_only_as_an_extension(proxy):
    """remote-consoles with "read_only": true in remote_console gives a view-only session."""
    def scenario():
        status, body = api.call(f"{proxy.api_url}/v2.1/servers/vm1/remote-consoles", "POST",
                                {"remote_console": {"protocol": "vnc", "type": "novnc",
                                                    "read_only": True}}, key=proxy.key)
        assert status == 200, body
        token = body["remote_console"]["url"].split("token%3D")[1]
        v = RfbViewer(WebSocketPipe(open_websocket(f"{proxy.ws_url}/websockify?token={token}")))
        v.handshake()
        v.pipe.send(KEY)
        v.framebuffer_update()
        bad = api.call(f"{proxy.api_url}/v2.1/servers/vm1/remote-consoles", "POST",
                       {"remote_console": {"protocol": "vnc", "type": "novnc",
                                           "read_only": "yes"}}, key=proxy.key)
        v.pipe.close()
        return types_seen(proxy), bad[0]
    seen, bad = yield in_thread(scenario)
    assert 3 in seen and 4 not in seen
    assert bad == 400


@pytest_twisted.inlineCallbacks
def test_an_unknown_client_message_ends_a_view_only_session_with_4011(proxy):
    def scenario():
        v = viewer(proxy, proxy.granted(read_only=True))
        v.pipe.send(REQUEST + b"\x07" + bytes(7))
        try:
            while True:
                v.read(1)
        except PipeClosed as e:
            return e.args[0]
    code, reason = yield in_thread(scenario)
    assert code == CloseCode.PROTOCOL_ERROR
    assert reason == "protocol error: unknown client message type 7"
