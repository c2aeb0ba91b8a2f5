"""
End to end, behind HAProxy: Debian's haproxy in front of the real service (twistd) and a real
guest, configured the way its documentation asks (``send-proxy-v2`` and ``send-proxy`` on the
servers, ``option forwardfor`` in HTTP mode), with the service's ``[proxy]`` section naming
it as trusted. Clients come from distinct loopback addresses (127.0.0.7 and up); HAProxy
reaches the service from 127.0.0.1.

Shown: a console opens through HAProxy and the audit names the client, not HAProxy; one
client's bad tokens get that client a 429 while another behind the same HAProxy still opens
its console; the xvpvnc listener (PROXY v1) and the API (X-Forwarded-For) name the client too.
"""

import os
import shutil
import socket
import subprocess
import time

import pytest
import websocket

from tests.e2e.service import ServiceProcess, free_port
from tests.support import api
from tests.support.viewer import RfbViewer, WebSocketPipe

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

_CONFIG = """\
global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend console
    bind 127.0.0.1:{console}
    default_backend console
backend console
    server consoleproxy 127.0.0.1:{service_console} send-proxy-v2
frontend xvpvnc
    bind 127.0.0.1:{xvpvnc}
    default_backend xvpvnc
backend xvpvnc
    server consoleproxy 127.0.0.1:{service_xvpvnc} send-proxy
frontend api
    mode http
    option forwardfor
    bind 127.0.0.1:{api}
    default_backend api
backend api
    mode http
    server consoleproxy 127.0.0.1:{service_api}
"""


class HAProxy:
    def __init__(self, workdir, service):
        self.ports = {"console": free_port(), "xvpvnc": free_port(), "api": free_port()}
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(_CONFIG.format(
            service_console=service.console_port, service_xvpvnc=service.xvpvnc_port,
            service_api=service.api_port, **self.ports))
        self.log = workdir / "haproxy.out"
        self.process = None

    def start(self):
        check = subprocess.run([HAPROXY, "-c", "-f", str(self.config)], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config)],
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.ports["api"]), timeout=1).close()
                return self
            except OSError:
                assert self.process.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "haproxy did not listen"
                time.sleep(0.05)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="module")
def front(testbed, tmp_path_factory):
    if not os.access(HAPROXY, os.X_OK):
        if os.environ.get("CONSOLEPROXY_REQUIRE_E2E", "").lower() in ("1", "true", "yes"):
            pytest.fail("CONSOLEPROXY_REQUIRE_E2E is set but there is no haproxy",
                        pytrace=False)
        pytest.skip("no haproxy; run tools/testbed.sh deps")
    work = tmp_path_factory.mktemp("front-proxy")
    service = ServiceProcess(work / "service", proxy__trusted="127.0.0.1",
                             proxy__proxy_protocol="console, xvpvnc",
                             ratelimit__slow_after=50, ratelimit__refuse_after=3).start()
    haproxy = HAProxy(work, service).start()
    yield service, haproxy
    haproxy.stop()
    service.stop()


def via(haproxy, href, service):
    return href.replace(f"127.0.0.1:{service.console_port}",
                        f"127.0.0.1:{haproxy.ports['console']}")


def connect(port, source):
    return socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))


def ws_status(url, source):
    port = int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    try:
        ws = websocket.create_connection(url, socket=connect(port, source), timeout=20,
                                         suppress_origin=True)
    except websocket.WebSocketBadStatusException as e:
        return e.status_code, None
    return 101, ws


def test_consoles_through_haproxy_name_the_client(front, vnc_guest):
    """Through HAProxy (PROXY v2): a console from 127.0.0.7 shows the guest and is audited as
    127.0.0.7; 127.0.0.8's bad tokens get 127.0.0.8 a 429 while 127.0.0.9 still gets in."""
    service, haproxy = front
    _, grant = api.grant(service.api_url, service.key, vnc_guest.name)
    status, ws = ws_status(via(haproxy, grant["href"], service), "127.0.0.7")
    assert status == 101
    try:
        viewer = RfbViewer(WebSocketPipe(ws))
        viewer.handshake((3, 8))
        assert viewer.framebuffer_update()
    finally:
        ws.close()
    bogus = via(haproxy, f"{service.ws_url}/websockify?token=bogus", service)
    guesses = [ws_status(bogus, "127.0.0.8")[0] for _ in range(4)]
    _, grant = api.grant(service.api_url, service.key, vnc_guest.name)
    other, ws = ws_status(via(haproxy, grant["href"], service), "127.0.0.9")
    if ws is not None:
        ws.close()
    assert guesses == [401, 401, 401, 429]
    assert other == 101
    time.sleep(0.5)
    log = service.log()
    assert "opened from tcp4:127.0.0.7:" in log and "opened from tcp4:127.0.0.9:" in log, \
        log[-3000:]
    assert log.count("console from tcp4:127.0.0.8:") == 4
    assert "from tcp4:127.0.0.1:" not in log  # HAProxy's own address is never the client


def test_xvpvnc_and_api_through_haproxy_name_the_client(front):
    """Through HAProxy: the xvpvnc listener (PROXY v1) audits a bad CONNECT as 127.0.0.10;
    the API's access log names 127.0.0.11 (X-Forwarded-For from the trusted HAProxy)."""
    service, haproxy = front
    with connect(haproxy.ports["xvpvnc"], "127.0.0.10") as s:
        s.sendall(b"CONNECT /console?token=bogus HTTP/1.0\r\n\r\n")
        answer = s.recv(4096)
    assert answer.split()[1] == b"401", answer
    with connect(haproxy.ports["api"], "127.0.0.11") as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    time.sleep(0.5)
    log = service.log()
    assert "refused vnc console from 127.0.0.10: token invalid" in log, log[-3000:]
    assert '] 127.0.0.11 - - [' in log and '"GET /healthz HTTP/1.1" 200' in log, log[-3000:]
