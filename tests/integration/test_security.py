"""
Security properties: the Origin check covers a token sent only as a cookie (cross-site
WebSocket hijacking) and does not burn it; a token or one-time password minted for one instance
never opens another, whatever path or shape it is presented in; no secret issued (API key,
console token, one-time VNC password, cookie) appears in any log line, HTTP error body, close
reason or redirect; pages reached with a token in the URL send no Referer.

On the memory tier (L{tests.support.memory}); the listeners' real-socket tests are in
test_vnc_console.py, test_xvpvnc.py and test_api.py.
"""

from twisted.logger import formatEvent, globalLogPublisher

from tests.support.fakevnc import FakeVncFactory
from tests.support.memory import CONSOLE_PORT
from tests.support.viewer import RfbRefused, RfbViewer, until_closed
from vncproxy.hypervisor import VncEndpoint

VM2 = "0b9d9f7e-8a53-4a52-9a3e-4f0c2b1d7e10"


def add_vm2(proxy):
    second = FakeVncFactory(password=b"secret1", name="second vm")
    port = proxy.serve(second)
    proxy.hypervisor.add_domain("vm2", uuid=VM2, vnc=VncEndpoint(host="127.0.0.1", port=port,
                                                                 password="secret1"))
    return second


def test_cookie_token_with_a_foreign_origin_is_refused_and_kept(memory_proxy):
    """A token only in the cookie, from a foreign Origin, gets 403 and stays usable from the right origin."""
    proxy = memory_proxy
    token = proxy.granted()["access_token"]
    url = f"{proxy.ws_url}/websockify"
    foreign = proxy.refusal(url, cookie=f"token={token}", origin="https://evil.example")
    pipe = proxy.websocket_pipe(url, cookie=f"token={token}",
                                origin=proxy.ws_url.replace("ws:", "http:"))
    init = RfbViewer(pipe).handshake()
    pipe.close()
    assert foreign[0] == 403
    assert init.name == "fake vm"


def test_a_token_for_one_instance_never_opens_another(memory_proxy):
    """vm1's token on vm2's path (name or UUID) is refused; over CONNECT or as a password it opens vm1 only."""
    proxy = memory_proxy
    second = add_vm2(proxy)
    results = {}
    for shape in ("vm2", VM2):
        token = proxy.granted()["access_token"]
        results[shape] = proxy.refusal(f"{proxy.ws_url}/v1/instances/{shape}/console"
                                       f"?access_token={token}")[0]
    token = proxy.granted()["access_token"]
    response, pipe = proxy.xvp_connect(f"/console?token={token}&instance={VM2}&instance_id=vm2")
    results["connect"] = RfbViewer(pipe).handshake().name
    pipe.close()
    password = proxy.granted()["password"].encode()
    native = RfbViewer(proxy.connect_tcp(proxy.xvpvnc_port))
    results["native"] = native.handshake(password=password).name
    native.pipe.close()
    assert results == {"vm2": 401, VM2: 401, "connect": "fake vm", "native": "fake vm"}
    assert second.connections == []


def exchange(proxy):
    """
    Grant, open, refuse and fail in every way a client can; return (every secret issued,
    everything a client was shown: each refusal's whole answer, close reason, error body and
    Location header).
    """
    exposed = []
    body = proxy.granted()
    token, password = body["access_token"], body["password"]
    url = f"{proxy.ws_url}/websockify?token={token}"
    pipe = proxy.websocket_pipe(url)
    RfbViewer(pipe).handshake()
    pipe.close()
    for options in ({}, {"origin": "https://evil.example"}):
        exposed.append(proxy.upgrade(url, **options).data)
    exposed.append(proxy.upgrade(f"{proxy.ws_url}/websockify", cookie=f"token={token}").data)
    exposed.append(proxy.upgrade(f"{proxy.ws_url}/v1/instances/vm9/console?access_token={token}").data)
    cookie_token = proxy.granted()["access_token"]
    exposed.append(proxy.upgrade(f"{proxy.ws_url}/websockify", cookie=f"token={cookie_token}",
                                 origin="https://evil.example").data)
    raw = proxy.connect_tcp(CONSOLE_PORT)
    raw.send(("GET /websockify HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              f"Sec-WebSocket-Version: 13 {cookie_token}\r\n"
              f"Cookie: token={cookie_token}\r\n\r\n").encode())
    answer = raw.recv()
    assert answer.startswith(b"HTTP/1.1 400 ")
    exposed.append(answer)
    raw.close()
    # a session that the proxy closes: its close reason
    live = proxy.granted()
    viewer = RfbViewer(proxy.websocket_pipe(proxy.href(live)))
    viewer.handshake()
    for connection in list(proxy.vnc.connections):
        connection.transport.loseConnection()
    exposed.append(repr(until_closed(viewer.pipe)).encode())
    # plain HTTP on the console listener, with the token in the URL: bodies and Location
    console = proxy.ws_url.replace("ws:", "http:")
    for method, path in (("GET", f"/nothing?token={token}"), ("POST", f"/vnc.html?token={token}"),
                         ("GET", f"/websockify?token={token}"), ("GET", f"/?token={token}")):
        response = proxy.request(console + path, method, raw=b"" if method == "POST" else None)
        exposed.append(repr(response.body).encode()
                       + str(response.headers.getRawHeaders("Location")).encode())
    # the API: wrong methods and bad bodies, with the key
    for method, raw_body in (("GET", None), ("POST", b"{"), ("PUT", b"{}")):
        exposed.append(repr(proxy.call("/v1/instances/vm1/console_access_token", method,
                                       raw=raw_body, key=proxy.key)).encode())
    # xvpvnc: a used token over CONNECT, a wrong and a used password natively
    response, pipe = proxy.xvp_connect(f"/console?token={token}")
    exposed.append(response)
    pipe.close()
    for guess in (b"WrongPw9", password.encode()):
        native = RfbViewer(proxy.connect_tcp(proxy.xvpvnc_port))
        try:
            native.handshake(password=guess)
        except RfbRefused as e:
            exposed.append(str(e).encode())
        native.pipe.close()
    secrets = [proxy.key, token, password, cookie_token, live["access_token"], live["password"]]
    return secrets, exposed


def test_no_secret_leaves_in_logs_errors_close_reasons_or_redirects(memory_proxy):
    """Every secret issued is absent from every log line, error body, close reason and Location header."""
    lines = []

    def observe(event):
        lines.append(formatEvent(event) + " " + repr(event))

    globalLogPublisher.addObserver(observe)
    try:
        secrets, exposed = exchange(memory_proxy)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert any("vnc session" in line for line in lines)  # the observer saw the sessions
    assert len(exposed) >= 15 and all(isinstance(e, bytes) for e in exposed)
    for secret in secrets:
        assert not [line for line in lines if secret in line], secret
        assert not [e for e in exposed if secret.encode() in e], secret


def test_pages_with_a_token_in_the_url_send_no_referer(memory_proxy):
    """Every answer on the console listener to a URL with a token says Referrer-Policy: no-referrer."""
    proxy = memory_proxy
    console = proxy.ws_url.replace("ws:", "http:")
    policies = [proxy.request(console + path).headers.getRawHeaders("Referrer-Policy")
                for path in ("/vnc.html?token=abc", "/serial.html?token=abc", "/nothing?token=abc",
                             "/websockify?token=abc")]
    assert policies == [["no-referrer"]] * 4
