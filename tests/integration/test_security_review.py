"""
The attacks of the security review (issue 17), each performed against the in-process service
over real loopback sockets, with a hostile VNC server where one is needed. Each test failed on
the code before its fix.
"""

import os
import socket
import struct

import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel, globalLogPublisher

from tests.integration.conftest import API_KEY
from tests.support import api, pki
from tests.support.viewer import PipeClosed, RfbRefused, RfbViewer, WebSocketPipe, open_websocket
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
    status, body = api.grant(proxy.api_url, proxy.key, instance)
    assert status == 200, body
    url = body["href"].replace(proxy.service.ctx.config.websocket_base_url, proxy.ws_url)
    return open_websocket(url)


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
        def scenario():
            ws = ws_console(proxy, "plain1")
            try:
                RfbViewer(WebSocketPipe(ws)).handshake()
            except RfbRefused as refused:
                return str(refused)
            finally:
                ws.close()
        reason = yield in_thread(scenario)
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
            def scenario():
                ws = ws_console(proxy, name)
                try:
                    RfbViewer(WebSocketPipe(ws)).handshake()
                except RfbRefused as refused:
                    return str(refused)
                finally:
                    ws.close()
            reason = yield in_thread(scenario)
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
    that ServerInit, and a close with the reason, at once."""
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
                assert viewer.read(2) == b"\x01\x01"
                viewer.pipe.send(b"\x01")
                assert viewer.read(4) == b"\0\0\0\0"
                viewer.pipe.send(b"\x01")  # ClientInit
                return close_of(ws), viewer._buf
            finally:
                ws.close()
        (((code, reason),), received), buffered = yield in_thread(scenario)
        assert received == b"" and buffered == b""
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
