"""
The xvpvnc listener, with a fake hypervisor and a fake VNC server: CONNECT clients (Nova's xvp
viewer protocol) and native VNC viewers authenticating with the one-time password of the token
response. The viewer is the independent blocking RFB client of tests/support/viewer.py.

On the memory tier (L{tests.support.memory}): clients reach the listeners through the in-memory
network, from any source address, and every wait is clock time. Two tests keep real sockets: a
CONNECT racing the native wait on a busy reactor (a real reactor's phases), and a native viewer
on the [listen] vnc listener.
"""

import socket
import time

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

from tests.support import api
from tests.support.fakevnc import HEIGHT, WIDTH, FakeVncFactory, pattern
from tests.support.viewer import PipeClosed, RfbRefused, RfbViewer, SocketPipe, connect_tcp
from vncproxy.hypervisor import DomainState, VncEndpoint

in_thread = threads.deferToThread
OK = b"HTTP/1.1 200 OK\r\n\r\n"
UNAUTHORIZED = b"HTTP/1.1 401 Not Authorized\r\n\r\n"
INVALID = b"HTTP/1.1 400 Invalid Request\r\n\r\n"


def native(proxy, port=None, source=None):
    return RfbViewer(proxy.connect_tcp(port or proxy.xvpvnc_port, source))


def closed_without_data(pipe):
    try:
        data = pipe.recv()
    except PipeClosed:
        return True
    raise AssertionError(f"expected the connection to close, got {data!r}")


@pytest.fixture
def log_lines():
    lines = []

    def observe(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


# -- CONNECT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["HTTP/1.0", "HTTP/1.1"])
@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
def test_connect_reaches_server_init(memory_proxy, http, version):
    """CONNECT with a token gets exactly '200 OK' CRLF CRLF, then RFB with None up to the VM's pixels."""
    proxy = memory_proxy
    token = proxy.granted()["access_token"]
    response, pipe = proxy.xvp_connect(f"/console?token={token}", version=http,
                                       headers=["Host: proxy.example", "User-Agent: xvp/1.0"])
    viewer = RfbViewer(pipe)
    init = viewer.handshake(version)
    rects = viewer.framebuffer_update()
    pipe.close()
    assert response == OK
    assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "fake vm")
    assert rects == [((0, 0, WIDTH, HEIGHT), pattern())]


def test_connect_shares_the_session(memory_proxy):
    """A CONNECT viewer asking for exclusive access still reaches QEMU as shared."""
    proxy = memory_proxy
    _, pipe = proxy.xvp_connect(f"/console?token={proxy.granted()['access_token']}")
    RfbViewer(pipe).handshake((3, 8), shared=False)
    shared = [c.shared for c in proxy.vnc.connections]
    pipe.close()
    assert shared == [True]


@pytest.mark.parametrize("target, expected", [
    ("/console?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", UNAUTHORIZED),
    ("/console", INVALID),
    ("/console?token=", INVALID),
    ("/console?other=1", INVALID),
    ("http://pr[oxy:6081/console?token=x", INVALID),  # once an unhandled ValueError (fuzzing)
])
def test_connect_refusals(memory_proxy, target, expected):
    """A bad token gets exactly '401 Not Authorized', a missing one '400 Invalid Request', then EOF."""
    response, pipe = memory_proxy.xvp_connect(target)
    assert response == expected
    assert closed_without_data(pipe)


def test_used_token_is_refused(memory_proxy):
    """A token works once on the xvpvnc port; a second CONNECT gets 401."""
    proxy = memory_proxy
    token = proxy.granted()["access_token"]
    first, pipe = proxy.xvp_connect(f"/console?token={token}")
    RfbViewer(pipe).handshake()
    second, _ = proxy.xvp_connect(f"/console?token={token}")
    pipe.close()
    assert (first, second) == (OK, UNAUTHORIZED)


@pytest.mark.parametrize("request_bytes", [
    b"GET /console?token=x HTTP/1.1\r\n\r\n",
    b"CONNECT /console?token=x HTTP/2.0\r\n\r\n",
    b"CONNECT /console?token=x HTTP/1.1\r\nno colon here\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"CONNECT /console?token=" + b"x" * 9000,
])
def test_junk_gets_400_and_close(memory_proxy, request_bytes):
    """Anything but an acceptable CONNECT request gets '400 Invalid Request' and the connection closes."""
    pipe = memory_proxy.connect_tcp(memory_proxy.xvpvnc_port)
    pipe.send(request_bytes)
    assert pipe.read_all() == INVALID


def test_connect_request_in_pieces(memory_proxy):
    """A request arriving in small pieces (slower than the native wait in total) still works."""
    proxy = memory_proxy
    token = proxy.granted()["access_token"]
    pipe = proxy.connect_tcp(proxy.xvpvnc_port)
    started = proxy.reactor.seconds()
    request = f"CONNECT /console?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    for i in range(0, len(request), 7):
        pipe.send(request[i:i + 7])
        proxy.advance(0.03)
    taken = proxy.reactor.seconds() - started
    response = pipe.read_until(b"\r\n\r\n")
    init = RfbViewer(pipe).handshake()
    pipe.close()
    assert taken > proxy.service.ctx.config.xvpvnc_native_wait
    assert response == OK and init.name == "fake vm"


def test_stalled_connect_request_times_out(memory_proxy):
    """A client that starts a CONNECT request and stalls is closed after the handshake time-out."""
    proxy = memory_proxy
    proxy.reconfigure(vnc_handshake_timeout=0.5)
    pipe = proxy.connect_tcp(proxy.xvpvnc_port)
    pipe.send(b"CONNECT /console?tok")
    started = proxy.reactor.seconds()
    assert pipe.read_all() == b""
    assert 0.5 <= proxy.reactor.seconds() - started < 1


def test_unreachable_console_is_explained_in_rfb(memory_proxy):
    """After 200 OK, a VM whose VNC server is gone gets an RFB failure with the reason."""
    proxy = memory_proxy
    token = proxy.granted()["access_token"]
    proxy.vnc.password = b"changed"  # the proxy's password no longer works upstream
    response, pipe = proxy.xvp_connect(f"/console?token={token}")
    with pytest.raises(RfbRefused) as refused:
        RfbViewer(pipe).handshake()
    assert response == OK
    assert "VNC authentication failed" in str(refused.value)


@pytest_twisted.inlineCallbacks
def test_connect_sent_in_time_wins_over_a_busy_reactor(proxy):
    """A CONNECT that arrived within the native wait is served as CONNECT even when the reactor
    was busy past the wait and runs the native timer before reading it (the soak found this).
    Over a real socket: the order of a real reactor's phases is the point."""
    assert proxy.service.ctx.config.xvpvnc_native_wait == 0.2
    status, body = yield in_thread(api.grant, proxy.api_url, proxy.key, "vm1")
    assert status == 200, body
    sock = yield in_thread(socket.create_connection, ("127.0.0.1", proxy.xvpvnc_port), 10)
    yield deferLater(reactor, 0.05, lambda: None)  # accepted: its native timer is armed
    # Resumed from a thread's result, so in the phase where the reactor runs calls from threads
    # and then its due timers, before reading sockets: the request arrives while the reactor is
    # busy here for longer than the wait.
    yield in_thread(lambda: None)
    sock.sendall(f"CONNECT /console?token={body['access_token']} HTTP/1.1\r\n\r\n".encode())
    time.sleep(0.4)

    def rest():
        response = b""
        while not response.endswith(b"\r\n\r\n"):
            response += sock.recv(1)
        init = RfbViewer(SocketPipe(sock)).handshake()
        sock.close()
        return response, init
    response, init = yield in_thread(rest)
    assert response == OK
    assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "fake vm")


# -- native viewers -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
@pytest.mark.parametrize("listener", ["xvpvnc_port", "native_port"])
def test_native_viewer_with_the_one_time_password(memory_proxy, version, listener):
    """A silent client is greeted with RFB 3.8 (at once on the native listener), offered VNC
    Authentication, and the password opens the VM; vnc_url names the native listener."""
    proxy = memory_proxy
    body = proxy.granted()
    pipe = proxy.connect_tcp(getattr(proxy, listener))
    waited = proxy.wait_until(lambda: pipe.client.received)  # the greeting
    viewer = RfbViewer(pipe)
    init = viewer.handshake(version, password=body["password"].encode())
    rects = viewer.framebuffer_update()
    shared = [c.shared for c in proxy.vnc.connections]
    pipe.close()
    native_wait = proxy.service.ctx.config.xvpvnc_native_wait
    assert waited == pytest.approx(0 if listener == "native_port" else native_wait)
    assert shared == [True]
    assert body["vnc_url"] == f"vnc://:{body['password']}@127.0.0.1:{proxy.native_port}"
    assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "fake vm")
    assert rects == [((0, 0, WIDTH, HEIGHT), pattern())]


@pytest_twisted.inlineCallbacks
def test_native_viewer_on_the_vnc_listener_over_a_real_socket(proxy):
    """The [listen] vnc listener over a real socket: the one-time password opens the VM."""
    def scenario():
        status, body = api.grant(proxy.api_url, proxy.key, "vm1")
        assert status == 200, body
        viewer = RfbViewer(connect_tcp("127.0.0.1", proxy.native_port))
        init = viewer.handshake((3, 8), password=body["password"].encode())
        rects = viewer.framebuffer_update()
        viewer.pipe.close()
        return init, rects
    init, rects = yield in_thread(scenario)
    assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "fake vm")
    assert rects == [((0, 0, WIDTH, HEIGHT), pattern())]


def test_native_greeting_waits_for_a_connect(memory_proxy):
    """The RFB greeting comes only after the native wait, so a CONNECT client has time to speak."""
    proxy = memory_proxy
    pipe = proxy.connect_tcp(proxy.xvpvnc_port)
    proxy.advance(0.19)
    assert pipe.client.received == b""
    started = proxy.reactor.seconds()
    greeting = pipe.recv()
    assert greeting == b"RFB 003.008\n"
    assert 0 < proxy.reactor.seconds() - started <= 0.011


@pytest.mark.parametrize("version", [(3, 7), (3, 8)])
def test_wrong_password_is_refused(memory_proxy, version, log_lines):
    """A wrong password gets a failed SecurityResult (with a reason in 3.8) and is logged without the password."""
    proxy = memory_proxy
    proxy.granted()
    with pytest.raises(RfbRefused) as refused:
        native(proxy).handshake(version, password=b"WrongPw9")
    assert str(refused.value) == ("authentication failed" if version == (3, 8) else "")
    assert any("wrong password" in line for line in log_lines)
    assert not any("WrongPw9" in line for line in log_lines)


def test_password_is_single_use_and_consumes_the_token(memory_proxy):
    """After a native login the password and its token are spent; the other console still works."""
    proxy = memory_proxy
    body = proxy.granted()
    first = native(proxy)
    first.handshake(password=body["password"].encode())
    with pytest.raises(RfbRefused):
        native(proxy).handshake(password=body["password"].encode())
    status, _ = proxy.refusal(proxy.href(body))
    first.pipe.close()
    assert status == 401


def test_password_selects_its_own_instance(memory_proxy):
    """With live passwords for two instances, each password opens its own instance."""
    proxy = memory_proxy
    port = proxy.serve(FakeVncFactory(password=b"other", name="second vm"))
    proxy.hypervisor.add_domain("vm2", vnc=VncEndpoint(host="127.0.0.1", port=port,
                                                       password="other"))
    first, second = proxy.granted("vm1"), proxy.granted("vm2")
    names = []
    for body in (second, first):
        viewer = native(proxy)
        names.append(viewer.handshake(password=body["password"].encode()).name)
        viewer.pipe.close()
    assert names == ["second vm", "fake vm"]


def test_address_rate_limit(make_memory_proxy, log_lines):
    """After [ratelimit] refuse_after failures, even the right password is refused from that address."""
    proxy = make_memory_proxy(ratelimit_slow_after=10, ratelimit_refuse_after=3)
    body = proxy.granted()
    for _ in range(3):
        with pytest.raises(RfbRefused, match="authentication failed"):
            native(proxy).handshake(password=b"WrongPw9")
    with pytest.raises(RfbRefused) as refused:
        native(proxy).handshake(password=body["password"].encode())
    assert "too many failed attempts from your address" in str(refused.value)
    assert any("too many failed attempts" in line and "native login" in line
               for line in log_lines)
    assert not any("WrongPw9" in line for line in log_lines)


def test_address_limit_expires_with_the_window(make_memory_proxy):
    """Once the window has passed, the address may try again."""
    proxy = make_memory_proxy(ratelimit_slow_after=10, ratelimit_refuse_after=1,
                              ratelimit_window=0.5)
    body = proxy.granted()
    with pytest.raises(RfbRefused):
        native(proxy).handshake(password=b"WrongPw9")
    with pytest.raises(RfbRefused, match="too many failed attempts"):
        native(proxy).handshake(password=body["password"].encode())
    proxy.advance(0.6)
    viewer = native(proxy)
    assert viewer.handshake(password=body["password"].encode()).name == "fake vm"
    viewer.pipe.close()


def test_hostile_addresses_lock_nobody_else_out(make_memory_proxy):
    """Five addresses (127.0.0.2-6) send garbage and wrong passwords until each is refused
    outright; a sixth (127.0.0.9) still logs in at once with the right password, on both
    listeners, and the guessed-at password was never revoked."""
    proxy = make_memory_proxy(ratelimit_slow_after=0, ratelimit_refuse_after=3)
    first, second = proxy.granted(), proxy.granted()
    for i in range(2, 7):
        source = f"127.0.0.{i}"
        junk = proxy.connect_tcp(proxy.xvpvnc_port, source)
        junk.send(b"GET / HTTP/1.1\r\n\r\n")
        assert junk.recv().startswith(b"HTTP/1.1 400")
        for port in (proxy.xvpvnc_port, proxy.native_port, proxy.xvpvnc_port):
            with pytest.raises(RfbRefused, match="authentication failed"):
                native(proxy, port, source).handshake(password=b"WrongPw9")
        with pytest.raises(RfbRefused, match="too many failed attempts from your address"):
            native(proxy, proxy.native_port, source).handshake(password=first["password"].encode())
    started = proxy.reactor.seconds()
    for body, port in ((first, proxy.native_port), (second, proxy.xvpvnc_port)):
        viewer = native(proxy, port, "127.0.0.9")
        viewer.handshake(password=body["password"].encode())
        viewer.pipe.close()
    elapsed = proxy.reactor.seconds() - started
    assert elapsed <= proxy.service.ctx.config.xvpvnc_native_wait + 0.01  # the wait, nothing more
    assert proxy.service.ctx.limiter.blocked("127.0.0.9") is False


def test_native_viewer_told_why_the_console_is_unreachable(memory_proxy):
    """When QEMU refuses the proxy, the native viewer's authentication fails with that reason."""
    proxy = memory_proxy
    body = proxy.granted()
    proxy.vnc.password = b"changed"
    with pytest.raises(RfbRefused) as refused:
        native(proxy).handshake(password=body["password"].encode())
    assert "VNC authentication failed" in str(refused.value)


def test_native_session_limit(memory_proxy):
    """A native login beyond the instance's session limit (2) is refused with the reason."""
    proxy = memory_proxy
    bodies = [proxy.granted() for _ in range(3)]  # granted while no session is open
    viewers = [native(proxy) for _ in bodies]
    for viewer, body in zip(viewers[:2], bodies):
        viewer.handshake(password=body["password"].encode())
    with pytest.raises(RfbRefused) as refused:
        viewers[2].handshake(password=bodies[2]["password"].encode())
    for viewer in viewers:
        viewer.pipe.close()
    assert str(refused.value).startswith("limit reached: vnc console limit reached")


def test_native_stall_after_greeting_times_out(memory_proxy):
    """A native viewer that never answers the greeting is closed after the handshake time-out."""
    proxy = memory_proxy
    proxy.reconfigure(vnc_handshake_timeout=0.6)
    pipe = proxy.connect_tcp(proxy.xvpvnc_port)
    started = proxy.reactor.seconds()
    greeting = pipe.read_until(b"\n")
    rest = pipe.read_all()
    assert greeting == b"RFB 003.008\n" and rest == b""
    assert 0.6 <= proxy.reactor.seconds() - started < 1


def test_native_junk_version_closes(memory_proxy):
    """A native client answering the greeting with junk is closed."""
    pipe = memory_proxy.connect_tcp(memory_proxy.xvpvnc_port)
    assert pipe.read_until(b"\n") == b"RFB 003.008\n"
    pipe.send(b"SSH-2.0-OpenSSH\r\n")
    assert pipe.read_all() == b""


def test_native_viewer_told_when_the_instance_stops_meanwhile(memory_proxy):
    """A native login waiting for a stalled VNC server hears 'instance stopped' when the VM powers off."""
    proxy = memory_proxy
    port = proxy.serve(Factory.forProtocol(Protocol))  # accepts, never speaks
    proxy.hypervisor.set_consoles("vm1", vnc=VncEndpoint(host="127.0.0.1", port=port))
    body = proxy.granted()
    viewer = native(proxy)
    proxy.reactor.callLater(1.0, proxy.hypervisor.set_state, "vm1", DomainState.SHUTOFF)
    with pytest.raises(RfbRefused) as refused:
        viewer.handshake(password=body["password"].encode())
    assert str(refused.value) == "instance stopped"
