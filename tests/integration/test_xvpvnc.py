"""
The xvpvnc listener in one process over real sockets, with a fake hypervisor and a fake VNC
server: CONNECT clients (Nova's xvp viewer protocol) and native VNC viewers authenticating with
the one-time password of the token response. Client code is blocking and runs in a thread.
"""

import dataclasses
import socket
import time

import pytest
import pytest_twisted
import websocket
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from tests.support import api
from tests.support.fakevnc import HEIGHT, WIDTH, FakeVncFactory, pattern
from tests.support.viewer import (
    PipeClosed,
    RfbRefused,
    RfbViewer,
    connect_tcp,
    open_websocket,
    xvp_connect,
)
from vncproxy.hypervisor import VncEndpoint

in_thread = threads.deferToThread
OK = b"HTTP/1.1 200 OK\r\n\r\n"
UNAUTHORIZED = b"HTTP/1.1 401 Not Authorized\r\n\r\n"
INVALID = b"HTTP/1.1 400 Invalid Request\r\n\r\n"


def grant(proxy, instance="vm1"):
    status, body = api.grant(proxy.api_url, proxy.key, instance)
    assert status == 200, body
    return body


def connect(proxy, target, **kwargs):
    return xvp_connect("127.0.0.1", proxy.xvpvnc_port, target, **kwargs)


def native(proxy):
    return RfbViewer(connect_tcp("127.0.0.1", proxy.xvpvnc_port))


def closed_without_data(pipe):
    try:
        data = pipe.recv()
    except PipeClosed:
        return True
    except ConnectionResetError:
        return True
    raise AssertionError(f"expected the connection to close, got {data!r}")


def set_config(proxy, **changes):
    ctx = proxy.service.ctx
    ctx.config = dataclasses.replace(ctx.config, **changes)


@pytest.fixture
def log_lines():
    lines = []

    def observe(event):
        from twisted.logger import formatEvent
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


# -- CONNECT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["HTTP/1.0", "HTTP/1.1"])
@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
@pytest_twisted.inlineCallbacks
def test_connect_reaches_server_init(proxy, http, version):
    """CONNECT with a token gets exactly '200 OK' CRLF CRLF, then RFB with None up to the VM's pixels."""
    def scenario():
        token = grant(proxy)["access_token"]
        response, pipe = connect(proxy, f"/console?token={token}", version=http,
                                 headers=["Host: proxy.example", "User-Agent: xvp/1.0"])
        viewer = RfbViewer(pipe)
        init = viewer.handshake(version)
        rects = viewer.framebuffer_update()
        pipe.close()
        return response, init, rects
    response, init, rects = yield in_thread(scenario)
    assert response == OK
    assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "fake vm")
    assert rects == [((0, 0, WIDTH, HEIGHT), pattern())]


@pytest_twisted.inlineCallbacks
def test_connect_shares_the_session(proxy):
    """A CONNECT viewer asking for exclusive access still reaches QEMU as shared."""
    def scenario():
        token = grant(proxy)["access_token"]
        _, pipe = connect(proxy, f"/console?token={token}")
        RfbViewer(pipe).handshake((3, 8), shared=False)
        shared = [c.shared for c in proxy.vnc.connections]
        pipe.close()
        return shared
    assert (yield in_thread(scenario)) == [True]


@pytest.mark.parametrize("target, expected", [
    ("/console?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", UNAUTHORIZED),
    ("/console", INVALID),
    ("/console?token=", INVALID),
    ("/console?other=1", INVALID),
    ("http://pr[oxy:6081/console?token=x", INVALID),  # once an unhandled ValueError (fuzzing)
])
@pytest_twisted.inlineCallbacks
def test_connect_refusals(proxy, target, expected):
    """A bad token gets exactly '401 Not Authorized', a missing one '400 Invalid Request', then EOF."""
    def scenario():
        response, pipe = connect(proxy, target)
        return response, closed_without_data(pipe)
    response, closed = yield in_thread(scenario)
    assert response == expected
    assert closed


@pytest_twisted.inlineCallbacks
def test_used_token_is_refused(proxy):
    """A token works once on the xvpvnc port; a second CONNECT gets 401."""
    def scenario():
        token = grant(proxy)["access_token"]
        first, pipe = connect(proxy, f"/console?token={token}")
        RfbViewer(pipe).handshake()
        second, _ = connect(proxy, f"/console?token={token}")
        pipe.close()
        return first, second
    assert (yield in_thread(scenario)) == (OK, UNAUTHORIZED)


@pytest.mark.parametrize("request_bytes", [
    b"GET /console?token=x HTTP/1.1\r\n\r\n",
    b"CONNECT /console?token=x HTTP/2.0\r\n\r\n",
    b"CONNECT /console?token=x HTTP/1.1\r\nno colon here\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"CONNECT /console?token=" + b"x" * 9000,
])
@pytest_twisted.inlineCallbacks
def test_junk_gets_400_and_close(proxy, request_bytes):
    """Anything but an acceptable CONNECT request gets '400 Invalid Request' and the connection closes."""
    def scenario():
        sock = socket.create_connection(("127.0.0.1", proxy.xvpvnc_port), timeout=10)
        sock.sendall(request_bytes)
        data = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        sock.close()
        return data
    assert (yield in_thread(scenario)) == INVALID


@pytest_twisted.inlineCallbacks
def test_connect_request_in_pieces(proxy):
    """A request arriving in small pieces (slower than the native wait in total) still works."""
    def scenario():
        token = grant(proxy)["access_token"]
        sock = socket.create_connection(("127.0.0.1", proxy.xvpvnc_port), timeout=10)
        request = f"CONNECT /console?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for i in range(0, len(request), 7):
            sock.sendall(request[i:i + 7])
            time.sleep(0.02)
        response = b""
        while not response.endswith(b"\r\n\r\n"):
            response += sock.recv(1)
        from tests.support.viewer import SocketPipe
        init = RfbViewer(SocketPipe(sock)).handshake()
        sock.close()
        return response, init
    response, init = yield in_thread(scenario)
    assert response == OK and init.name == "fake vm"


@pytest_twisted.inlineCallbacks
def test_stalled_connect_request_times_out(proxy):
    """A client that starts a CONNECT request and stalls is closed after the handshake time-out."""
    set_config(proxy, vnc_handshake_timeout=0.5)

    def scenario():
        sock = socket.create_connection(("127.0.0.1", proxy.xvpvnc_port), timeout=10)
        sock.sendall(b"CONNECT /console?tok")
        started = time.monotonic()
        data = sock.recv(100)
        return data, time.monotonic() - started
    data, waited = yield in_thread(scenario)
    assert data == b"" and 0.3 < waited < 5


@pytest_twisted.inlineCallbacks
def test_unreachable_console_is_explained_in_rfb(proxy):
    """After 200 OK, a VM whose VNC server is gone gets an RFB failure with the reason."""
    def scenario():
        token = grant(proxy)["access_token"]
        proxy.vnc.password = b"changed"  # the proxy's password no longer works upstream
        response, pipe = connect(proxy, f"/console?token={token}")
        try:
            RfbViewer(pipe).handshake()
        except RfbRefused as e:
            return response, str(e)
        return response, None
    response, reason = yield in_thread(scenario)
    assert response == OK
    assert reason and "VNC authentication failed" in reason


# -- native viewers -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize("listener", ["xvpvnc_port", "native_port"])
def test_native_viewer_with_the_one_time_password(proxy, version, listener):
    """A silent client is greeted with RFB 3.8 (at once on the native listener), offered VNC
    Authentication, and the password opens the VM; vnc_url names the native listener."""
    def scenario():
        body = grant(proxy)
        viewer = RfbViewer(connect_tcp("127.0.0.1", getattr(proxy, listener)))
        init = viewer.handshake(version, password=body["password"].encode())
        rects = viewer.framebuffer_update()
        shared = [c.shared for c in proxy.vnc.connections]
        viewer.pipe.close()
        return body, init, rects, shared
    body, init, rects, shared = yield in_thread(scenario)
    assert shared == [True]
    assert body["vnc_url"] == f"vnc://:{body['password']}@127.0.0.1:{proxy.native_port}"
    assert (init.width, init.height, init.name) == (WIDTH, HEIGHT, "fake vm")
    assert rects == [((0, 0, WIDTH, HEIGHT), pattern())]


@pytest_twisted.inlineCallbacks
def test_native_greeting_waits_for_a_connect(proxy):
    """The RFB greeting comes only after the native wait, so a CONNECT client has time to speak."""
    def scenario():
        sock = socket.create_connection(("127.0.0.1", proxy.xvpvnc_port), timeout=10)
        started = time.monotonic()
        greeting = sock.recv(12)
        waited = time.monotonic() - started
        sock.close()
        return greeting, waited
    greeting, waited = yield in_thread(scenario)
    assert greeting == b"RFB 003.008\n"
    assert 0.15 < waited < 3


@pytest_twisted.inlineCallbacks
def test_connect_sent_in_time_wins_over_a_busy_reactor(proxy):
    """A CONNECT that arrived within the native wait is served as CONNECT even when the reactor
    was busy past the wait and runs the native timer before reading it (the soak found this)."""
    set_config(proxy, xvpvnc_native_wait=0.2)
    token = (yield in_thread(grant, proxy))["access_token"]
    sock = yield in_thread(socket.create_connection, ("127.0.0.1", proxy.xvpvnc_port), 10)
    yield deferLater(reactor, 0.05, lambda: None)  # accepted: its native timer is armed
    # Resumed from a thread's result, so in the phase where the reactor runs calls from threads
    # and then its due timers, before reading sockets: the request arrives while the reactor is
    # busy here for longer than the wait.
    yield in_thread(lambda: None)
    sock.sendall(f"CONNECT /console?token={token} HTTP/1.1\r\n\r\n".encode())
    time.sleep(0.4)
    response = yield in_thread(sock.recv, len(OK))  # RFB from the session may follow
    sock.close()
    assert response == OK


@pytest.mark.parametrize("version", [(3, 7), (3, 8)])
@pytest_twisted.inlineCallbacks
def test_wrong_password_is_refused(proxy, version, log_lines):
    """A wrong password gets a failed SecurityResult (with a reason in 3.8) and is logged without the password."""
    def scenario():
        grant(proxy)
        viewer = native(proxy)
        with pytest.raises(RfbRefused) as refused:
            viewer.handshake(version, password=b"WrongPw9")
        return str(refused.value)
    reason = yield in_thread(scenario)
    assert reason == ("authentication failed" if version == (3, 8) else "")
    assert any("wrong password" in line for line in log_lines)
    assert not any("WrongPw9" in line for line in log_lines)


@pytest_twisted.inlineCallbacks
def test_password_is_single_use_and_consumes_the_token(proxy):
    """After a native login the password and its token are spent; the other console still works."""
    def scenario():
        body = grant(proxy)
        first = native(proxy)
        first.handshake(password=body["password"].encode())
        second = native(proxy)
        with pytest.raises(RfbRefused):
            second.handshake(password=body["password"].encode())
        try:
            open_websocket(body["href"].replace(proxy.service.ctx.config.websocket_base_url,
                                                proxy.ws_url)).close()
            status = 101
        except websocket.WebSocketBadStatusException as e:
            status = e.status_code
        first.pipe.close()
        return status
    assert (yield in_thread(scenario)) == 401


@pytest_twisted.inlineCallbacks
def test_password_selects_its_own_instance(proxy):
    """With live passwords for two instances, each password opens its own instance."""
    other = FakeVncFactory(password=b"other", name="second vm")
    listener = reactor.listenTCP(0, other, interface="127.0.0.1")
    proxy.hypervisor.add_domain("vm2", vnc=VncEndpoint(host="127.0.0.1",
                                                       port=listener.getHost().port,
                                                       password="other"))

    def scenario():
        first, second = grant(proxy, "vm1"), grant(proxy, "vm2")
        names = []
        for body in (second, first):
            viewer = native(proxy)
            names.append(viewer.handshake(password=body["password"].encode()).name)
            viewer.pipe.close()
        return names
    try:
        assert (yield in_thread(scenario)) == ["second vm", "fake vm"]
    finally:
        yield listener.stopListening()


@pytest_twisted.inlineCallbacks
def test_address_rate_limit(make_proxy, log_lines):
    """After [ratelimit] refuse_after failures, even the right password is refused from that address."""
    proxy = make_proxy(xvpvnc_native_wait=0.2, ratelimit_slow_after=10, ratelimit_refuse_after=3)

    def scenario():
        body = grant(proxy)
        for _ in range(3):
            with pytest.raises(RfbRefused, match="authentication failed"):
                native(proxy).handshake(password=b"WrongPw9")
        with pytest.raises(RfbRefused) as refused:
            native(proxy).handshake(password=body["password"].encode())
        return str(refused.value)
    assert "too many failed attempts from your address" in (yield in_thread(scenario))
    assert any("too many failed attempts" in line and "native login" in line
               for line in log_lines)
    assert not any("WrongPw9" in line for line in log_lines)


@pytest_twisted.inlineCallbacks
def test_address_limit_expires_with_the_window(make_proxy):
    """Once the window has passed, the address may try again."""
    proxy = make_proxy(xvpvnc_native_wait=0.2, ratelimit_slow_after=10, ratelimit_refuse_after=1,
                       ratelimit_window=0.5)

    def scenario():
        body = grant(proxy)
        with pytest.raises(RfbRefused):
            native(proxy).handshake(password=b"WrongPw9")
        time.sleep(0.6)
        viewer = native(proxy)
        viewer.handshake(password=body["password"].encode())
        viewer.pipe.close()
    yield in_thread(scenario)


@pytest_twisted.inlineCallbacks
def test_hostile_addresses_lock_nobody_else_out(make_proxy):
    """Five addresses (127.0.0.2-6) send garbage and wrong passwords until each is refused
    outright; a sixth (127.0.0.9) still logs in at once with the right password, on both
    listeners, and the guessed-at password was never revoked."""
    proxy = make_proxy(ratelimit_slow_after=0, ratelimit_refuse_after=3)

    def scenario():
        first, second = grant(proxy), grant(proxy)
        for i in range(2, 7):
            source = f"127.0.0.{i}"
            junk = connect_tcp("127.0.0.1", proxy.xvpvnc_port, source=source)
            junk.send(b"GET / HTTP/1.1\r\n\r\n")
            assert junk.recv().startswith(b"HTTP/1.1 400")
            for port in (proxy.xvpvnc_port, proxy.native_port, proxy.xvpvnc_port):
                with pytest.raises(RfbRefused, match="authentication failed"):
                    RfbViewer(connect_tcp("127.0.0.1", port, source=source)).handshake(
                        password=b"WrongPw9")
            with pytest.raises(RfbRefused, match="too many failed attempts from your address"):
                RfbViewer(connect_tcp("127.0.0.1", proxy.native_port, source=source)).handshake(
                    password=first["password"].encode())
        started = time.monotonic()
        for body, port in ((first, proxy.native_port), (second, proxy.xvpvnc_port)):
            viewer = RfbViewer(connect_tcp("127.0.0.1", port, source="127.0.0.9"))
            viewer.handshake(password=body["password"].encode())
            viewer.pipe.close()
        return time.monotonic() - started
    elapsed = yield in_thread(scenario)
    assert elapsed < 0.2 + 2 * 1.0  # the xvpvnc port's native_wait, and nothing more
    assert proxy.service.ctx.limiter.blocked("127.0.0.9") is False


@pytest_twisted.inlineCallbacks
def test_native_viewer_told_why_the_console_is_unreachable(proxy):
    """When QEMU refuses the proxy, the native viewer's authentication fails with that reason."""
    def scenario():
        body = grant(proxy)
        proxy.vnc.password = b"changed"
        with pytest.raises(RfbRefused) as refused:
            native(proxy).handshake(password=body["password"].encode())
        return str(refused.value)
    assert "VNC authentication failed" in (yield in_thread(scenario))


@pytest_twisted.inlineCallbacks
def test_native_session_limit(proxy):
    """A native login beyond the instance's session limit (2) is refused with the reason."""
    def scenario():
        bodies = [grant(proxy) for _ in range(3)]  # granted while no session is open
        viewers = [native(proxy) for _ in bodies]
        for viewer, body in zip(viewers[:2], bodies):
            viewer.handshake(password=body["password"].encode())
        with pytest.raises(RfbRefused) as refused:
            viewers[2].handshake(password=bodies[2]["password"].encode())
        for viewer in viewers:
            viewer.pipe.close()
        return str(refused.value)
    assert (yield in_thread(scenario)).startswith("limit reached: vnc console limit reached")


@pytest_twisted.inlineCallbacks
def test_native_stall_after_greeting_times_out(proxy):
    """A native viewer that never answers the greeting is closed after the handshake time-out."""
    set_config(proxy, vnc_handshake_timeout=0.6)

    def scenario():
        sock = socket.create_connection(("127.0.0.1", proxy.xvpvnc_port), timeout=10)
        started = time.monotonic()
        greeting = sock.recv(12)
        rest = sock.recv(100)
        return greeting, rest, time.monotonic() - started
    greeting, rest, waited = yield in_thread(scenario)
    assert greeting == b"RFB 003.008\n" and rest == b""
    assert 0.4 < waited < 5


@pytest_twisted.inlineCallbacks
def test_native_junk_version_closes(proxy):
    """A native client answering the greeting with junk is closed."""
    def scenario():
        sock = socket.create_connection(("127.0.0.1", proxy.xvpvnc_port), timeout=10)
        assert sock.recv(12) == b"RFB 003.008\n"
        sock.sendall(b"SSH-2.0-OpenSSH\r\n")
        return sock.recv(100)
    assert (yield in_thread(scenario)) == b""


@pytest_twisted.inlineCallbacks
def test_native_viewer_told_when_the_instance_stops_meanwhile(proxy):
    """A native login waiting for a stalled VNC server hears 'instance stopped' when the VM powers off."""
    from twisted.internet.protocol import Factory, Protocol

    from vncproxy.hypervisor import DomainState

    silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    proxy.hypervisor.set_consoles("vm1", vnc=VncEndpoint(host="127.0.0.1",
                                                         port=silent.getHost().port))

    def scenario():
        body = grant(proxy)
        viewer = native(proxy)
        reactor.callFromThread(reactor.callLater, 1.0, proxy.hypervisor.set_state, "vm1",
                               DomainState.SHUTOFF)
        with pytest.raises(RfbRefused) as refused:
            viewer.handshake(password=body["password"].encode())
        return str(refused.value)
    try:
        assert (yield in_thread(scenario)) == "instance stopped"
    finally:
        yield silent.stopListening()
