"""
Security properties over real sockets: the Origin check covers a token sent only as a cookie
(cross-site WebSocket hijacking) and does not burn it; a token or one-time password minted for
one instance never opens another, whatever path or shape it is presented in; no secret issued
(API key, console token, one-time VNC password, cookie) appears in any log line, HTTP error
body, close reason or redirect; pages reached with a token in the URL send no Referer.
"""

import socket
import urllib.request

import pytest_twisted
import websocket
from twisted.internet import reactor, threads
from twisted.logger import formatEvent, globalLogPublisher

from tests.support import api
from tests.support.fakevnc import FakeVncFactory
from tests.support.viewer import (
    PipeClosed,
    RfbRefused,
    RfbViewer,
    WebSocketPipe,
    connect_tcp,
    open_websocket,
    xvp_connect,
)
from vncproxy.hypervisor import VncEndpoint

in_thread = threads.deferToThread
VM2 = "0b9d9f7e-8a53-4a52-9a3e-4f0c2b1d7e10"


def grant(proxy, instance="vm1"):
    status, body = api.grant(proxy.api_url, proxy.key, instance)
    assert status == 200, body
    return body


def attempt(url, **kwargs):
    """@return: (status, body of the refusal or b"", the open socket or None)."""
    try:
        ws = open_websocket(url, **kwargs)
    except websocket.WebSocketBadStatusException as e:
        return e.status_code, e.resp_body or b"", None
    return 101, b"", ws


def add_vm2(proxy):
    second = FakeVncFactory(password=b"secret1", name="second vm")
    listener = reactor.listenTCP(0, second, interface="127.0.0.1")
    proxy.hypervisor.add_domain("vm2", uuid=VM2, vnc=VncEndpoint(
        host="127.0.0.1", port=listener.getHost().port, password="secret1"))
    return second, listener


@pytest_twisted.inlineCallbacks
def test_cookie_token_with_a_foreign_origin_is_refused_and_kept(proxy):
    """A token only in the cookie, from a foreign Origin, gets 403 and stays usable from the right origin."""
    def scenario():
        token = grant(proxy)["access_token"]
        url = f"{proxy.ws_url}/websockify"
        foreign = attempt(url, cookie=f"token={token}", origin="https://evil.example")
        status, _, ws = attempt(url, cookie=f"token={token}", origin=proxy.ws_url.replace("ws:", "http:"))
        init = RfbViewer(WebSocketPipe(ws)).handshake() if ws else None
        if ws:
            ws.close()
        return foreign[0], status, init
    foreign, status, init = yield in_thread(scenario)
    assert foreign == 403
    assert status == 101 and init.name == "fake vm"


@pytest_twisted.inlineCallbacks
def test_a_token_for_one_instance_never_opens_another(proxy):
    """vm1's token on vm2's path (name or UUID) is refused; over CONNECT or as a password it opens vm1 only."""
    second, listener = add_vm2(proxy)

    def scenario():
        results = {}
        for shape in ("vm2", VM2):
            token = grant(proxy)["access_token"]
            results[shape] = attempt(f"{proxy.ws_url}/v1/instances/{shape}/console"
                                     f"?access_token={token}")[0]
        token = grant(proxy)["access_token"]
        response, pipe = xvp_connect("127.0.0.1", proxy.xvpvnc_port,
                                     f"/console?token={token}&instance={VM2}&instance_id=vm2")
        results["connect"] = RfbViewer(pipe).handshake().name
        pipe.close()
        password = grant(proxy)["password"].encode()
        native = RfbViewer(connect_tcp("127.0.0.1", proxy.xvpvnc_port))
        results["native"] = native.handshake(password=password).name
        native.pipe.close()
        return results
    try:
        results = yield in_thread(scenario)
    finally:
        yield listener.stopListening()
    assert results == {"vm2": 401, VM2: 401, "connect": "fake vm", "native": "fake vm"}
    assert second.connections == []


@pytest_twisted.inlineCallbacks
def test_no_secret_leaves_in_logs_errors_close_reasons_or_redirects(proxy):
    """Every secret issued is absent from every log line, error body, close reason and Location header."""
    lines = []

    def observe(event):
        lines.append(formatEvent(event) + " " + repr(event))

    def scenario():
        exposed = []  # every error body, close reason and Location header we were given
        body = grant(proxy)
        token, password = body["access_token"], body["password"]
        url = f"{proxy.ws_url}/websockify?token={token}"
        ws = open_websocket(url)
        RfbViewer(WebSocketPipe(ws)).handshake()
        ws.close()
        for kwargs in ({}, {"cookie": f"token={token}"}, {"origin": "https://evil.example"}):
            exposed.append(attempt(url if not kwargs.get("cookie") else
                                   f"{proxy.ws_url}/websockify", **kwargs)[1])
        exposed.append(attempt(f"{proxy.ws_url}/v1/instances/vm9/console?access_token={token}")[1])
        cookie_token = grant(proxy)["access_token"]
        exposed.append(attempt(f"{proxy.ws_url}/websockify", cookie=f"token={cookie_token}",
                               origin="https://evil.example")[1])
        with socket.create_connection(("127.0.0.1", int(proxy.ws_url.rsplit(":", 1)[1]))) as s:
            s.sendall(("GET /websockify HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       f"Sec-WebSocket-Version: 13 {cookie_token}\r\n"
                       f"Cookie: token={cookie_token}\r\n\r\n").encode())
            s.settimeout(3)
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 400 ")
            exposed.append(answer)
        # a session that the proxy closes: its close reason
        live = grant(proxy)
        ws = open_websocket(f"{proxy.ws_url}/websockify?token={live['access_token']}")
        viewer = RfbViewer(WebSocketPipe(ws))
        viewer.handshake()
        threads.blockingCallFromThread(
            reactor, lambda: [c.transport.loseConnection() for c in list(proxy.vnc.connections)])
        try:
            while True:
                viewer.pipe.recv()
        except PipeClosed as closed:
            exposed.append(repr(closed.args).encode())
        # plain HTTP on the console listener, with the token in the URL: bodies and Location
        for method, path in (("GET", f"/nothing?token={token}"), ("POST", f"/vnc.html?token={token}"),
                             ("GET", f"/websockify?token={token}"), ("GET", f"/?token={token}")):
            request = urllib.request.Request(proxy.ws_url.replace("ws:", "http:") + path,
                                             method=method, data=b"" if method == "POST" else None)
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    exposed.append(str(r.headers.get("Location")).encode())
            except urllib.error.HTTPError as e:
                exposed.append(e.read() + str(e.headers.get("Location")).encode())
        # the API: wrong methods and bad bodies, with the key
        for method, raw in (("GET", None), ("POST", b"{"), ("PUT", b"{}")):
            exposed.append(repr(api.call(f"{proxy.api_url}/v1/instances/vm1/console_access_token",
                                         method, raw=raw, key=proxy.key)).encode())
        # xvpvnc: a used token over CONNECT, a wrong and a used password natively
        response, pipe = xvp_connect("127.0.0.1", proxy.xvpvnc_port, f"/console?token={token}")
        exposed.append(response)
        pipe.close()
        for guess in (b"WrongPw9", password.encode()):
            native = RfbViewer(connect_tcp("127.0.0.1", proxy.xvpvnc_port))
            try:
                native.handshake(password=guess)
            except RfbRefused as e:
                exposed.append(str(e).encode())
            native.pipe.close()
        return [proxy.key, token, password, cookie_token, live["access_token"],
                live["password"]], exposed

    globalLogPublisher.addObserver(observe)
    try:
        secrets, exposed = yield in_thread(scenario)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert any("vnc session" in line for line in lines)  # the observer saw the sessions
    assert len(exposed) >= 15 and all(isinstance(e, bytes) for e in exposed)
    for secret in secrets:
        assert not [line for line in lines if secret in line], secret
        assert not [e for e in exposed if secret.encode() in e], secret


@pytest_twisted.inlineCallbacks
def test_pages_with_a_token_in_the_url_send_no_referer(proxy):
    """Every answer on the console listener to a URL with a token says Referrer-Policy: no-referrer."""
    def scenario():
        policies = []
        for path in ("/vnc.html?token=abc", "/serial.html?token=abc", "/nothing?token=abc",
                     "/websockify?token=abc"):
            request = urllib.request.Request(proxy.ws_url.replace("ws:", "http:") + path)
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    policies.append(r.headers.get("Referrer-Policy"))
            except urllib.error.HTTPError as e:
                policies.append(e.headers.get("Referrer-Policy"))
        return policies
    assert (yield in_thread(scenario)) == ["no-referrer"] * 4
