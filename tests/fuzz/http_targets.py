"""
Fuzz targets over whole HTTP exchanges: raw bytes into the service's own sites (the token API
and the console listener with its WebSocket upgrade), through Twisted's HTTP channel on an
in-memory transport, with a fake hypervisor and a memory clock.

In the input, C{@K} stands for the API key and C{@T} for a freshly minted console token, so a
fuzzer reaches what lies behind authentication. Invariants: every answer is an HTTP/1.x status
line with a status of the contract (never 500), no error answer echoes the key or the token,
nothing is logged as a failure, and the service's bounds hold.
"""

import re

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher

from vncproxy import config
from vncproxy.hypervisor import VncEndpoint
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.service import ConsoleProxyService

KEY = "fuzz-api-key-0123456789abcdef"
VM = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"
API_STATUSES = {200, 400, 401, 404, 405, 406, 409, 413, 501, 503,
                101, 202, 403}  # the LXD API under /1.0: upgrades, operations, wrong secrets
# 101 upgrade, 200/204 web client pages, 426 console path without upgrade, 429 rate limited
CONSOLE_STATUSES = {101, 200, 204, 304, 400, 401, 403, 404, 405, 409, 413, 426, 429, 501}
_STATUS_LINE = re.compile(rb"(?:^|\r\n)(HTTP/1\.[01]) (\d{3}) ")


class _World:
    """One service on a memory clock, rebuilt every C{_RUNS} inputs so timers do not pile up."""

    _RUNS = 2000

    def __init__(self):
        self.runs = self._RUNS
        self.failures = []
        globalLogPublisher.addObserver(self._observe)

    def _observe(self, event):
        if event.get("log_failure") is not None or event.get("isError"):
            self.failures.append(event)

    def fresh(self):
        if self.runs >= self._RUNS:
            self.clock = MemoryReactorClock()
            hypervisor = FakeHypervisor(self.clock)
            hypervisor.add_domain("vm1", uuid=VM, vnc=VncEndpoint(host="127.0.0.1", port=5900,
                                                                  password="secret1"))
            hypervisor.add_domain("vm2")
            self.service = ConsoleProxyService(
                config.defaults(ratelimit_refuse_after=10**9, ratelimit_slow_after=10**9),
                self.clock, hypervisor, [KEY])
            self.api = self.service.getServiceNamed("api").factory
            self.console = self.service.getServiceNamed("console").factory
            self.runs = 0
        self.runs += 1
        self.failures.clear()
        return self


_world = None


def world():
    global _world
    if _world is None:
        _world = _World()
    return _world.fresh()


class _Transport(StringTransport):
    """A memory transport that, like a TCP one, lets a protocol unregister no producer."""

    def unregisterProducer(self):
        self.producer = None
        self.streaming = None

    def setTcpNoDelay(self, enabled):
        pass


def exchange(site, data, clock, chunk=None):
    """
    Feed C{data} to a new channel of C{site}, let the clock run past every deadline, and
    return what was written back.
    """
    # (Autobahn's timers run on the service's reactor, this clock: vncproxy.relay.)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = _Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    transport.protocol = channel  # as on a TCP transport; Autobahn swaps it on an upgrade
    channel.makeConnection(transport)
    chunk = chunk or len(data) or 1
    for at in range(0, len(data), chunk):
        if transport.disconnecting:
            break
        # once Autobahn took the transport over, bytes go to its protocol
        transport.protocol.dataReceived(data[at:at + chunk])
    clock.advance(0)
    written = transport.value()
    if not transport.disconnecting:
        transport.loseConnection()
    for protocol in {channel, transport.protocol}:
        try:
            protocol.connectionLost(_closed())
        except Exception:
            pass  # a second connectionLost; what matters is what was answered
    return written


def _closed():
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure
    return Failure(ConnectionDone())


def _check(written, allowed, secrets, sent=b""):
    # A secret the caller itself put in a request line (method, path) may come back in a 404 or
    # 405 naming what was asked for; one sent as a credential (header, query, cookie) never.
    request_lines = [line for line in sent.split(b"\n") if b" HTTP/" in line]
    secrets = [s for s in secrets
               if not any(s.encode() in line.split(b"?")[0] for line in request_lines)]
    statuses = _STATUS_LINE.findall(written)
    if written:
        assert written.startswith(b"HTTP/1."), written[:80]
    for _, status in statuses:
        code = int(status)
        assert code in allowed, written[:300]
        if code >= 400:
            for secret in secrets:
                assert secret.encode() not in written, (secret, written[:300])


def _substitute(w, data):
    token = None
    if b"@T" in data:
        token, _ = w.service.ctx.tokens.mint(VM, "vnc", instance_name="vm1")
        data = data.replace(b"@T", token.encode())
    return data.replace(b"@K", KEY.encode()), token


def api_request(data):
    """
    C{data[1:]} as raw bytes on the API listener (C{data[0]}: delivery chunk size).
    """
    if not data:
        return
    w = world()
    raw, token = _substitute(w, data[1:])
    written = exchange(w.api, raw, w.clock, chunk=data[0] or None)
    _check(written, API_STATUSES, [KEY] + ([token] if token else []), raw)
    assert not w.failures, w.failures[0]


def websocket_upgrade(data):
    """
    C{data[1:]} as raw bytes on the console listener (C{data[0]}: delivery chunk size): HTTP
    requests, WebSocket upgrades and whatever follows them.
    """
    if not data:
        return
    w = world()
    raw, token = _substitute(w, data[1:])
    written = exchange(w.console, raw, w.clock, chunk=data[0] or None)
    _check(written, CONSOLE_STATUSES, [KEY] + ([token] if token else []), raw)
    assert not w.failures, w.failures[0]
    assert w.service.ctx.sessions.sessions() == []  # none outlives its connection


_UPGRADE = (b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:6080\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n%s\r\n")

API_SEEDS = [
    b"\x00POST /v1/instances/vm1/console_access_token HTTP/1.1\r\nHost: x\r\nX-Auth-Token: @K"
    b"\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n"
    b'{"console_type": "vnc"}\r\n',
    b"\x07POST /v2.1/servers/vm1/remote-consoles HTTP/1.1\r\nAuthorization: Bearer @K\r\n"
    b"OpenStack-API-Version: compute 2.6\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'2b\r\n{"remote_console": {"protocol": "vnc", "t\r\n12\r\nype": "novnc"}}\r\n\r\n0\r\n\r\n',
    b"\x00GET /healthz HTTP/1.1\r\n\r\nGET /v1/instances/vm1/console_log?tail=5 HTTP/1.1\r\n"
    b"X-Auth-Token: @K\r\n\r\n",
    b"\x00POST /v2.1/p/servers/vm1/action HTTP/1.0\r\nX-Auth-Token: @K\r\nContent-Length: 30"
    b'\r\n\r\n{"os-getVNCConsole": {"type": 1}}',
    b"\x00POST /1.0/instances/vm1/console HTTP/1.1\r\nAuthorization: Bearer @K\r\n"
    b'Content-Length: 47\r\n\r\n{"type": "console", "width": 80, "force": true}'
    b"GET /1.0 HTTP/1.1\r\n\r\nGET /1.0/operations/x HTTP/1.1\r\nX-Auth-Token: @K\r\n\r\n",
    b"\x03" + _UPGRADE % (b"/1.0/events?type=operation", b"X-Auth-Token: @K\r\n")
    + b"\x81\x85abcd" + b"hello",
    b"\x00" + _UPGRADE % (b"/1.0/operations/00000000-0000-0000-0000-000000000000/websocket"
                          b"?secret=@K", b""),
]

CONSOLE_SEEDS = [
    b"\x00" + _UPGRADE % (b"/websockify?token=@T", b"Origin: http://127.0.0.1:6080\r\n"),
    b"\x05" + _UPGRADE % (b"/v1/instances/vm2/console?access_token=@T", b""),
    b"\x00" + _UPGRADE % (b"/", b"Cookie: token=@T\r\nOrigin: https://evil.example\r\n"),
    b"\x00" + _UPGRADE % (b"/websockify?token=@T", b"Sec-WebSocket-Protocol: binary\r\n")
    + b"\x82\x85abcd" + b"RFB 0",
    b"\x00GET /vnc.html?token=@T HTTP/1.1\r\nHost: x\r\n\r\n",
]

TARGETS = {"api_request": api_request, "websocket_upgrade": websocket_upgrade}
SEEDS = {"api_request": API_SEEDS, "websocket_upgrade": CONSOLE_SEEDS}
