"""
Slow and hostile peers: header deadlines that dribbling cannot reset, a cap on pending
connections per address, and WebSocket sessions that outlive the HTTP channel's timers.
"""

import socket
import time

import pytest_twisted
from twisted.internet import threads
from twisted.logger import globalLogPublisher

from tests.support import api
from tests.support.viewer import RfbViewer, WebSocketPipe, open_websocket

in_thread = threads.deferToThread


def port_of(url):
    return int(url.rsplit(":", 1)[1])


def closed_within(sock, seconds):
    """Whether the server closes C{sock} within C{seconds} (reading whatever it sends)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True
    return False


@pytest_twisted.inlineCallbacks
def test_dribbling_headers_are_cut_off_at_the_deadline(make_proxy):
    """A peer sending one header byte at a time is closed at header_timeout despite the traffic."""
    proxy = make_proxy(http_header_timeout=1.0)

    def scenario():
        s = socket.create_connection(("127.0.0.1", port_of(proxy.ws_url)))
        t0 = time.monotonic()
        try:
            for byte in b"GET /websockify HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                s.send(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - t0
        s.close()
        return elapsed
    elapsed = yield in_thread(scenario)
    assert 0.9 < elapsed < 3


@pytest_twisted.inlineCallbacks
def test_silent_connections_are_capped_per_address(make_proxy):
    """Beyond max_pending_per_address silent connections from one address are dropped at once."""
    proxy = make_proxy(http_max_pending_per_address=5, http_header_timeout=5.0)

    def scenario():
        held = [socket.create_connection(("127.0.0.1", port_of(proxy.api_url))) for _ in range(5)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port_of(proxy.api_url)))
        dropped = closed_within(extra, 2)
        for s in held:
            s.close()
        time.sleep(0.2)
        health = api.call(f"{proxy.api_url}/healthz")[0]
        return dropped, health
    dropped, health = yield in_thread(scenario)
    assert dropped
    assert health == 200  # once the silent ones are gone, the address is served again


@pytest_twisted.inlineCallbacks
def test_websocket_session_outlives_the_http_timers(make_proxy):
    """An open console is not cut by the HTTP header deadline or idle timeout, and nothing fails."""
    proxy = make_proxy(http_header_timeout=0.5, http_idle_timeout=0.5)
    failures = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    def scenario():
        _, body = api.grant(proxy.api_url, proxy.key, "vm1")
        ws = open_websocket(body["href"].replace(proxy.service.ctx.config.websocket_base_url,
                                                 proxy.ws_url))
        viewer = RfbViewer(WebSocketPipe(ws))
        viewer.handshake()
        time.sleep(1.5)
        rects = viewer.framebuffer_update()
        ws.close()
        return rects
    globalLogPublisher.addObserver(observe)
    try:
        rects = yield in_thread(scenario)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert rects and failures == []


@pytest_twisted.inlineCallbacks
def test_silent_xvpvnc_connections_are_capped_per_address(make_proxy):
    """On the xvpvnc port too, handshakes left unfinished are capped per address; a session
    that took over no longer counts, and the address is served again once the silent ones go."""
    proxy = make_proxy(xvpvnc_max_pending_per_address=3, xvpvnc_native_wait=30.0,
                       vnc_handshake_timeout=30.0)

    def connect_session():
        _, body = api.grant(proxy.api_url, proxy.key, "vm1")
        sock = socket.create_connection(("127.0.0.1", proxy.xvpvnc_port), timeout=10)
        sock.sendall(f"CONNECT /console?token={body['access_token']} HTTP/1.1\r\n\r\n".encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += sock.recv(1)
        return sock, head

    def scenario():
        session, head = connect_session()  # relaying: not pending any more
        held = [socket.create_connection(("127.0.0.1", proxy.xvpvnc_port)) for _ in range(3)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", proxy.xvpvnc_port))
        dropped = closed_within(extra, 2)
        for s in held:
            s.close()
        time.sleep(0.2)
        again, again_head = connect_session()
        for s in (session, again):
            s.close()
        return head, dropped, again_head
    head, dropped, again_head = yield in_thread(scenario)
    assert head.startswith(b"HTTP/1.1 200") and again_head.startswith(b"HTTP/1.1 200")
    assert dropped
    assert proxy.service.getServiceNamed("xvpvnc").factory.pending.counts() == {}


@pytest_twisted.inlineCallbacks
def test_a_dribbled_request_body_is_cut_off_at_the_deadline(make_proxy):
    """A complete head followed by a body sent a byte at a time ("slow POST") is closed at
    header_timeout, and counts against its address's pending connections meanwhile."""
    proxy = make_proxy(http_header_timeout=1.0, http_max_pending_per_address=1)
    path = "/v1/instances/vm1/console_access_token"

    def scenario():
        s = socket.create_connection(("127.0.0.1", port_of(proxy.api_url)))
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {proxy.key}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n".encode())
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port_of(proxy.api_url)))
        extra_dropped = closed_within(extra, 0.5)
        t0 = time.monotonic()
        try:
            for _ in range(100):
                s.send(b" ")
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - t0
        s.close()
        return extra_dropped, elapsed
    extra_dropped, elapsed = yield in_thread(scenario)
    assert extra_dropped
    assert elapsed < 2.5
