"""
The attacks of the security review (issue 17), each performed against the in-process service
over real loopback sockets (the reconnect grace's address binding on the memory tier,
L{tests.support.memory}, where a client's source address is free), with a hostile VNC server
where one is needed. Each test failed on the code before its fix.
"""

import os
import socket
import struct
import time

import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from tests.integration.conftest import API_KEY
from tests.support import api, pki
from tests.support.viewer import PipeClosed, RfbRefused, RfbViewer, WebSocketPipe, open_websocket
from vncproxy.clientaddr import client_address
from vncproxy.hypervisor import VncEndpoint

in_thread = threads.deferToThread
CHALLENGE = bytes(range(16))


class HostileVnc(Protocol):
    """
    Sends its script at once, C{after_choice} once the proxy sent 13 bytes (version and a 3.8
    security choice), C{after_client_init} after 14 (ClientInit); records all it receives.
    """

    def connectionMade(self):
        self.factory.connections.append(self)
        self.received = b""
        self.transport.write(self.factory.script)

    def dataReceived(self, data):
        before = len(self.received)
        self.received += data
        self.factory.received += data
        for mark, reply in ((13, self.factory.after_choice), (14, self.factory.after_client_init)):
            if before < mark <= len(self.received) and reply:
                self.transport.write(reply)


class HostileVncFactory(Factory):
    protocol = HostileVnc

    def __init__(self, script, after_choice=b"", after_client_init=b""):
        self.script = script
        self.after_choice = after_choice
        self.after_client_init = after_client_init
        self.connections = []
        self.received = b""


def add_hostile(proxy, name, factory, uuid):
    listener = reactor.listenTCP(0, factory, interface="127.0.0.1")
    proxy.hypervisor.add_domain(name, uuid=uuid, vnc=VncEndpoint(
        host="127.0.0.1", port=listener.getHost().port, password="secret1"))
    return listener


def ws_console(proxy, instance):
    return open_websocket(proxy.href(proxy.granted(instance)))


def refusal_over_websocket(proxy, instance):
    """The reason a viewer's RFB handshake over the console WebSocket to C{instance} is refused
    with (C{None} if it is not)."""
    ws = ws_console(proxy, instance)
    try:
        RfbViewer(WebSocketPipe(ws)).handshake()
    except RfbRefused as refused:
        return str(refused)
    finally:
        ws.close()


# -- 1. VeNCrypt is required when a CA is configured ------------------------------------------


def vencrypt_proxy(make_proxy, tmp_path):
    ca = pki.make_ca()
    ca.write(tmp_path / "ca.pem")
    return make_proxy(vnc_tls_ca=str(tmp_path / "ca.pem"))


@pytest_twisted.inlineCallbacks
def test_with_a_ca_a_server_offering_only_none_is_refused(make_proxy, tmp_path):
    """With [vnc] tls_ca set, a VNC server offering only None gets no session: the viewer is
    refused with the reason, the server receives no security choice."""
    proxy = vencrypt_proxy(make_proxy, tmp_path)
    hostile = HostileVncFactory(b"RFB 003.008\n\x01\x01")
    listener = add_hostile(proxy, "plain1", hostile, "2a9a5a1e-4c55-4b1e-9f33-3e1c7a0b5d01")
    try:
        reason = yield in_thread(refusal_over_websocket, proxy, "plain1")
        assert "does not offer VeNCrypt" in reason and "refusing to connect in the clear" in reason
        assert hostile.received == b"RFB 003.008\n"  # our version, then nothing
    finally:
        yield listener.stopListening()


@pytest_twisted.inlineCallbacks
def test_with_a_ca_a_vnc_challenge_is_never_answered_in_the_clear(make_proxy, tmp_path):
    """With [vnc] tls_ca set, a server offering only VNC Authentication (3.8, and 3.3 choosing
    it) never receives a DES response made with libvirt's password."""
    proxy = vencrypt_proxy(make_proxy, tmp_path)
    offers = {"vncauth38": (b"RFB 003.008\n\x01\x02", CHALLENGE, "6d7c3d9e-0c1f-4f6e-8a3b-1f2e3d4c5b01"),
              "vncauth33": (b"RFB 003.003\n" + struct.pack("!I", 2) + CHALLENGE, b"",
                            "6d7c3d9e-0c1f-4f6e-8a3b-1f2e3d4c5b02")}
    for name, (script, after, uuid) in offers.items():
        hostile = HostileVncFactory(script, after_choice=after)
        listener = add_hostile(proxy, name, hostile, uuid)
        try:
            reason = yield in_thread(refusal_over_websocket, proxy, name)
            assert "refusing to connect in the clear" in reason, name
            assert hostile.received == script[:12], (name, hostile.received)
        finally:
            yield listener.stopListening()


# -- 11. ServerInit is parsed and bounded -------------------------------------------------------

PIXEL_FORMAT = struct.pack("!BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)


def close_of(ws):
    pipe = WebSocketPipe(ws)
    received = b""
    try:
        while True:
            received += pipe.recv()
    except PipeClosed as closed:
        return closed.args, received


@pytest_twisted.inlineCallbacks
def test_a_4_gib_desktop_name_never_reaches_the_viewer(proxy):
    """A VNC server announcing a 4 GiB desktop name in ServerInit: the viewer gets no byte of
    that ServerInit, and a close with the reason, at once (our ClientInit goes as soon as
    the server accepted us, so this is wherever the viewer's own handshake then is)."""
    header = struct.pack("!HH", 1024, 768) + PIXEL_FORMAT + struct.pack("!I", 0xFFFFFFFF)
    hostile = HostileVncFactory(b"RFB 003.008\n\x01\x01", after_choice=b"\0\0\0\0",
                                after_client_init=header + b"A" * 65536)
    listener = add_hostile(proxy, "bigname", hostile, "9c1d7e2a-5b3f-4a8e-8d6c-0e1f2a3b4c01")
    try:
        def scenario():
            ws = ws_console(proxy, "bigname")
            try:
                viewer = RfbViewer(WebSocketPipe(ws))
                assert viewer.read(12) == b"RFB 003.008\n"
                viewer.pipe.send(b"RFB 003.008\n")
                return close_of(ws), viewer._buf
            finally:
                ws.close()
        (((code, reason),), received), buffered = yield in_thread(scenario)
        assert received in (b"", b"\x01\x01") and buffered == b""  # (the security offer)
        assert code == 4009, code  # console unavailable
        assert "bad ServerInit" in reason and "4294967295 bytes exceeds 4096" in reason
    finally:
        yield listener.stopListening()


# -- 9. A NUL byte in a path --------------------------------------------------------------------


def raw_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {API_KEY}\r\n"
                  "Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest_twisted.inlineCallbacks
def test_nul_in_a_path_is_400_without_a_traceback(make_proxy, tmp_path):
    """%00 in a static-file path or an API path: 400 and no error or critical log event (the
    access log line is the only line)."""
    novnc = tmp_path / "novnc"
    (novnc / "core").mkdir(parents=True)
    (novnc / "vnc.html").write_text("<!DOCTYPE html>")
    (novnc / "core" / "rfb.js").write_text("export default class RFB {}\n")
    xterm = tmp_path / "xterm"
    xterm.mkdir()
    (xterm / "xterm.mjs").write_text("export class Terminal {}\n")
    proxy = make_proxy(novnc_dir=str(novnc), xterm_dir=str(xterm))
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        console = int(proxy.ws_url.rsplit(":", 1)[1])
        api_port = int(proxy.api_url.rsplit(":", 1)[1])
        answers = yield in_thread(lambda: [
            raw_get(console, "/core/rfb.js%00.html"),
            raw_get(console, "/vnc.html%00"),
            raw_get(api_port, "/v1/instances/vm1%00/console_log"),
            raw_get(api_port, "/1.0/instances/vm%001/console"),
        ])
    finally:
        globalLogPublisher.removeObserver(events.append)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"NUL byte in the path" in answer
    bad = [e for e in events if "log_failure" in e or e.get("log_level") in (
        LogLevel.error, LogLevel.critical)]
    assert bad == []


# -- 10. The PTY check resolves the path ----------------------------------------------------------


def ptmx_descriptors():
    fds = "/proc/self/fd"
    found = 0
    for fd in os.listdir(fds):
        try:
            found += os.readlink(f"{fds}/{fd}") == "/dev/ptmx"
        except OSError:
            pass
    return found


@pytest_twisted.inlineCallbacks
def test_a_serial_path_escaping_dev_pts_is_never_opened(proxy):
    """A domain whose serial "PTY" is /dev/pts/../ptmx (the PTY multiplexer: opening it makes a
    new terminal, which the old prefix check let through): the service never opens it."""
    before = ptmx_descriptors()
    proxy.hypervisor.add_domain("evilpty", uuid="3e0b9a8c-7d6f-4e5a-9b1c-2d3e4f5a6b01",
                                serial_pty="/dev/pts/../ptmx")
    yield deferLater(reactor, 0.5, lambda: None)
    assert ptmx_descriptors() == before


# -- 3. Trusted front proxies: forwarding headers and the PROXY protocol ------------------------


def upgrade(port, token, source="127.0.0.1", headers=(), preface=b""):
    """A raw WebSocket upgrade from C{source}: @return: the status code (None when cut)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as s:
        host = "" if any(h.lower().startswith("host:") for h in headers) else "Host: x\r\n"
        answer = b""
        try:
            # A connection the service cuts at once (an untrusted PROXY sender) may be reset
            # before the request is even sent: that is the cut the caller asks about.
            s.sendall(preface + (f"GET /websockify?token={token} HTTP/1.1\r\n{host}"
                                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                 "Sec-WebSocket-Version: 13\r\n"
                                 + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode())
            while b"\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
    return int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else None


def audited(events, kind):
    return [e for e in events if e.get("audit") == kind]


def watch():
    events = []
    globalLogPublisher.addObserver(events.append)
    return events


def port_of(url):
    return int(url.rsplit(":", 1)[1])


@pytest_twisted.inlineCallbacks
def test_behind_a_trusted_proxy_one_clients_bad_tokens_do_not_block_the_others(make_proxy):
    """A balancer at 127.0.0.1 forwards two clients (X-Forwarded-For, Forwarded): the one
    sending bad tokens is refused with 429, the other still gets through; the audit and the
    access log name the clients, not the balancer."""
    proxy = make_proxy(proxy_trusted=("127.0.0.1",), ratelimit_slow_after=50,
                       ratelimit_refuse_after=3)
    port = port_of(proxy.ws_url)
    events = watch()
    try:
        def scenario():
            bad = [upgrade(port, "bogus", headers=["X-Forwarded-For: 198.51.100.7"])
                   for _ in range(4)]
            token = api.grant(proxy.api_url, proxy.key, "vm1")[1]["access_token"]
            good = upgrade(port, token, headers=['Forwarded: for="198.51.100.8:4711";proto=http'])
            api.call(f"{proxy.api_url}/healthz", headers={"X-Forwarded-For": "198.51.100.9"})
            return bad, good
        bad, good = yield in_thread(scenario)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert bad == [401, 401, 401, 429]
    assert good == 101
    assert {e["peer"] for e in audited(events, "refusal")} == {"198.51.100.7"}
    assert [e["peer"] for e in audited(events, "connect")] == ["198.51.100.8"]
    access = [formatEvent(e) for e in events if '"GET /healthz' in formatEvent(e)]
    assert len(access) == 1 and access[0].startswith("198.51.100.9 "), access


@pytest_twisted.inlineCallbacks
def test_forwarding_headers_from_an_untrusted_address_are_ignored(make_proxy):
    """A client at 127.0.0.2 claiming to be someone else in X-Forwarded-For is still itself:
    its failures block it, whatever it claims next."""
    proxy = make_proxy(proxy_trusted=("127.0.0.1",), ratelimit_slow_after=50,
                       ratelimit_refuse_after=3)
    port = port_of(proxy.ws_url)
    statuses = yield in_thread(lambda: [
        upgrade(port, "bogus", source="127.0.0.2",
                headers=[f"X-Forwarded-For: 203.0.113.{n}"]) for n in range(4)])
    assert statuses == [401, 401, 401, 429]


def proxy_v1(client, port=40000):
    return f"PROXY TCP4 {client} 127.0.0.1 {port} 6080\r\n".encode()


def proxy_v2(client, port=40000):
    addresses = socket.inet_aton(client) + socket.inet_aton("127.0.0.1") + struct.pack(
        "!HH", port, 6080)
    return (b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11" + struct.pack("!H", len(addresses))
            + addresses)


@pytest_twisted.inlineCallbacks
def test_proxy_protocol_names_the_client_on_the_console_and_xvpvnc_listeners(make_proxy):
    """With [proxy] proxy_protocol = console, xvpvnc: the PROXY v1 and v2 headers from the
    trusted balancer name the client in the limiter and the audit; a connection from an
    untrusted address, or without a header, is cut."""
    proxy = make_proxy(proxy_trusted=("127.0.0.1",), proxy_protocol=("console", "xvpvnc"),
                       ratelimit_slow_after=50, ratelimit_refuse_after=3)
    port = port_of(proxy.ws_url)
    events = watch()
    try:
        def scenario():
            v1 = [upgrade(port, "bogus", preface=proxy_v1("203.0.113.5")) for _ in range(4)]
            token = api.grant(proxy.api_url, proxy.key, "vm1")[1]["access_token"]
            v2 = upgrade(port, token, preface=proxy_v2("203.0.113.6"))
            untrusted = upgrade(port, token, source="127.0.0.2", preface=proxy_v1("203.0.113.7"))
            headerless = upgrade(port, token)
            with socket.create_connection(("127.0.0.1", proxy.xvpvnc_port), timeout=10) as s:
                s.sendall(proxy_v2("203.0.113.8") + b"CONNECT /console?token=bogus HTTP/1.0\r\n\r\n")
                xvp = s.recv(4096)
            return v1, v2, untrusted, headerless, xvp
        v1, v2, untrusted, headerless, xvp = yield in_thread(scenario)
        yield deferLater(reactor, 0.2, lambda: None)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert v1 == [401, 401, 401, 429]
    assert v2 == 101  # another client behind the same balancer is not blocked
    assert untrusted is None and headerless is None
    assert xvp.startswith(b"HTTP/1.0 401") or xvp.startswith(b"HTTP/1.1 401"), xvp
    peers = [client_address(e["peer"]) for e in audited(events, "refusal")]  # host of tcp4:h:p
    assert peers.count("203.0.113.5") == 4 and "203.0.113.8" in peers, peers
    assert [client_address(e["peer"]) for e in audited(events, "connect")] == ["203.0.113.6"]


# -- 4. One warning when a console listener is plain text on a non-loopback address -----------


def warnings_at_start(make_proxy, **settings):
    events = watch()
    try:
        make_proxy(**settings)
    finally:
        globalLogPublisher.removeObserver(events.append)
    return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn
            and "plain text" in formatEvent(e)]


def test_plain_text_on_all_interfaces_is_said_once_at_start(make_proxy):
    """The service started with its console listener on all interfaces says so in one
    warning line naming it; on loopback it says nothing."""
    from tests.integration.conftest import free_port
    exposed = warnings_at_start(make_proxy, console_listen=f"tcp:{free_port()}")
    assert len(exposed) == 1 and "console (all interfaces)" in exposed[0], exposed
    assert "xvpvnc" not in exposed[0]
    assert warnings_at_start(make_proxy) == []


# -- 8. Wrong API keys are rate-limited per address ----------------------------------------------


def api_status(port, key, source):
    with socket.create_connection(("127.0.0.1", port), timeout=30,
                                  source_address=(source, 0)) as s:
        s.sendall(f"POST /v1/instances/vm1/console_access_token HTTP/1.1\r\nHost: x\r\n"
                  f"X-Auth-Token: {key}\r\nContent-Type: application/json\r\n"
                  "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode())
        answer = s.recv(4096)
    return int(answer.split()[1])


@pytest_twisted.inlineCallbacks
def test_wrong_api_keys_are_slowed_then_refused_per_address(make_proxy):
    """Guessing keys from 127.0.0.3: after slow_after failures each 401 comes later, after
    refuse_after the address gets 429 even with the right key; 127.0.0.4 is not affected."""
    proxy = make_proxy(ratelimit_slow_after=2, ratelimit_refuse_after=5)
    port = port_of(proxy.api_url)

    def scenario():
        timings = []
        for n in range(6):
            started = time.monotonic()
            status = api_status(port, f"guess-{n:012d}-xxxxxxxx", "127.0.0.3")
            timings.append((status, time.monotonic() - started))
        right_blocked = api_status(port, proxy.key, "127.0.0.3")
        other = api_status(port, proxy.key, "127.0.0.4")
        return timings, right_blocked, other

    timings, right_blocked, other = yield in_thread(scenario)
    assert [status for status, _ in timings] == [401, 401, 401, 401, 401, 429]
    assert timings[0][1] < 0.2 and timings[1][1] < 0.2
    assert timings[2][1] >= 0.25 and timings[4][1] >= 0.75  # 0.25 s more per failure
    assert right_blocked == 429
    assert other == 400  # the right key from elsewhere is heard (400: the body lacks console_type)


# -- 12. The Origin check uses the addresses we know, not the request's Host ---------------------


@pytest_twisted.inlineCallbacks
def test_dns_rebinding_origin_is_refused(make_proxy):
    """A page on a rebound name (Origin and Host both http://rebound.example:PORT) gets 403;
    the listener's own address and a configured origin still pass; a bare host in
    allowed_origins means https on 443 only."""
    proxy = make_proxy(allowed_origins=("portal.example", "http://tools.example:8080"),
                       max_vnc_sessions=20)
    port = port_of(proxy.ws_url)

    def attempt(origin, host=None):
        token = api.grant(proxy.api_url, proxy.key, "vm1")[1]["access_token"]
        return upgrade(port, token, headers=[f"Origin: {origin}"] + (
            [f"Host: {host}"] if host else []))

    results = yield in_thread(lambda: {
        "rebound": attempt(f"http://rebound.example:{port}", f"rebound.example:{port}"),
        "listener": attempt(f"http://127.0.0.1:{port}"),
        "localhost": attempt(f"http://localhost:{port}"),
        "portal-https": attempt("https://portal.example"),
        "portal-http": attempt("http://portal.example"),
        "portal-other-port": attempt("https://portal.example:8443"),
        "full-origin": attempt("http://tools.example:8080"),
        "full-origin-other-port": attempt("http://tools.example:8081"),
    })
    assert results == {"rebound": 403, "listener": 101, "localhost": 101, "portal-https": 101,
                       "portal-http": 403, "portal-other-port": 403, "full-origin": 101,
                       "full-origin-other-port": 403}


# -- 6. The reconnect grace is bound to the address that held the session -----------------------


def drop_then_retry(proxy, retry_from):
    """A session from 127.0.0.5 drops without a close; the token is presented again from
    C{retry_from} within the grace, then from 127.0.0.5. @return: the two HTTP statuses."""
    url = proxy.href(proxy.granted())
    pipe = proxy.websocket_pipe(url, source="127.0.0.5")
    RfbViewer(pipe).handshake()
    pipe.viewer.transport.loseConnection()  # the network drops: no close frame
    proxy.advance(0.3)
    outcomes = []
    for source in (retry_from, "127.0.0.5"):
        outcomes.append(proxy.upgrade(url, source=source).status)  # a 101 drops again at once
        proxy.advance(0.3)
    return outcomes


def test_a_dropped_session_resumes_only_from_its_own_address(make_memory_proxy):
    """Someone else presenting a dropped session's token within the grace (from 127.0.0.6)
    gets 401, and the owner at 127.0.0.5 still resumes; with reconnect_same_address off,
    the other address resumes. On the memory tier: the addresses are in-memory ones."""
    assert drop_then_retry(make_memory_proxy(), "127.0.0.6") == [401, 101]
    free = make_memory_proxy(reconnect_same_address=False)
    assert drop_then_retry(free, "127.0.0.6")[0] == 101


# -- 7. A global cap per listener on connections in their handshake -----------------------------


def is_cut(sock, wait=1.0):
    """Whether the server ended C{sock} (EOF or reset) within C{wait} seconds."""
    sock.settimeout(wait)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


@pytest_twisted.inlineCallbacks
def test_silent_connections_from_many_addresses_shed_the_oldest(make_proxy):
    """16 silent connections from 4 addresses (each under its per-address cap) on listeners
    capped at 8 pending: the 8 oldest are cut, the 8 newest stay, and a console still opens."""
    proxy = make_proxy(http_max_pending=8, xvpvnc_max_pending=8)

    def flood(port):
        socks = []
        for n in range(16):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5,
                                                  source_address=(f"127.0.0.{10 + n % 4}", 0)))
            time.sleep(0.02)  # arrival order is age order
        cut = [is_cut(s, wait=0.5 if i < 8 else 0.1) for i, s in enumerate(socks)]
        for s in socks:
            s.close()
        return cut

    def scenario():
        console = flood(port_of(proxy.ws_url))
        xvp = flood(proxy.xvpvnc_port)
        ws = ws_console(proxy, "vm1")
        name = RfbViewer(WebSocketPipe(ws)).handshake().name
        ws.close()
        return console, xvp, name

    console, xvp, name = yield in_thread(scenario)
    assert console == [True] * 8 + [False] * 8
    assert xvp[:8] == [True] * 8 and not any(xvp[8:]), xvp
    assert name == "fake vm"
    assert proxy.service.getServiceNamed("xvpvnc").factory.pending.shed == 8


# -- Info: serial log reads and clears are audited; ?format=text strips terminal sequences ------


HOSTILE_OUTPUT = (b"login: \x1b[31mred\x1b[0m\r\n"
                  b"\x1b]0;pwned title\x07\x1b]52;c;Y3VybCBldmlsfHNo\x07clip\r\n"
                  b"\x1b[2J\x1b[Hcleared \xc2\x9b\xc3\xa9t\xc3\xa9\tend\x08\r\n")


@pytest_twisted.inlineCallbacks
def test_log_text_format_strips_terminal_sequences_and_reads_are_audited(proxy, serial_guest):
    """A guest prints colour, a window title, an OSC 52 clipboard write and a screen clear:
    ?format=text returns the words only, the default stays raw; reading and clearing the log
    are audit events naming the caller and the client."""
    events = watch()
    try:
        def scenario():
            serial_guest.shell.prints(HOSTILE_OUTPUT)
            base = f"{proxy.api_url}/v1/instances/ser1/console_log"
            deadline = time.monotonic() + 5
            while b"end" not in api.call(base, key=proxy.key)[1]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            raw = api.call(base, key=proxy.key)
            text = api.call(f"{base}?format=text", key=proxy.key)
            bad = api.call(f"{base}?format=html", key=proxy.key)
            cleared = api.call(base, "DELETE", key=proxy.key)
            return raw, text, bad, cleared
        raw, text, bad, cleared = yield in_thread(scenario)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert raw[0] == 200 and HOSTILE_OUTPUT in raw[1]
    assert text[0] == 200
    body = text[1].decode("utf-8")
    assert "login: red\nclip\ncleared été\tend\n" in body
    assert "\x1b" not in body and "pwned" not in body and "Y3Vy" not in body
    assert bad[0] == 400 and cleared[0] == 204
    reads = audited(events, "log_read")
    clears = audited(events, "log_clear")
    assert len(reads) >= 2 and len(clears) == 1
    assert clears[0]["caller"].startswith("key-") and clears[0]["peer"] == "127.0.0.1"
    assert clears[0]["instance"] == serial_guest.uuid
