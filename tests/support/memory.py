"""
The whole consoleproxy in memory: the service on a L{MemoryReactorClock} with the fake
hypervisor, the fake VNC server behind it, and clients that reach its listeners through
C{iosim} transports instead of sockets. Time moves only by L{MemoryProxy.advance}; nothing
sleeps, no thread runs.

L{MemoryNetwork} (tests/support/memorynet.py) plays the kernel: every C{connectTCP} the reactor
records (Twisted's HTTP C{Agent}, the proxy's connection to QEMU) is joined to the factory
listening on that port and the data is pumped until everybody is quiet. WebSocket clients are
Autobahn's own (C{autobahn.twisted.testing.create_memory_agent}), served by the console
listener's HTTP site, so the upgrade goes through the same resource tree as over TCP. Byte
pipes for the blocking RFB viewer of tests/support/viewer.py are in tests/support/memorypipes.py.
"""

import dataclasses
import itertools
import json
import re
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from autobahn.twisted.testing import MemoryReactorClockResolver, create_memory_agent
from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from tests.support.fakevnc import HEIGHT, WIDTH, FakeVncFactory
from tests.support.granting import GrantsAndUrls
from tests.support.memorynet import HOST, MemoryNetwork, client_address, pausable
from tests.support.memorypipes import OneShot, TcpPipe, WebSocketPipe
from vncproxy import config
from vncproxy.hypervisor import VncEndpoint
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.rfb import HandshakeFailed, SecurityAccepted, UpstreamHandshake, client_init
from vncproxy.rfb.events import ServerInitReceived
from vncproxy.rfb.serverinit import ServerInitReader
from vncproxy.service import ConsoleProxyService

API_KEY = "integration-test-key-0123456789"
VM = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"
API_PORT, CONSOLE_PORT, XVPVNC_PORT, NATIVE_PORT, VNC_PORT = 16080, 16081, 16082, 16083, 15900


@implementer(IAgentEndpointFactory)
class _Endpoints:
    def __init__(self, reactor):
        self.reactor = reactor

    def endpointForURI(self, uri):
        return TCP4ClientEndpoint(self.reactor, uri.host.decode(), uri.port)


@dataclass
class Response:
    status: int
    headers: Headers
    body: object  # decoded JSON, or the raw bytes of any other type


class WebSocketViewer(WebSocketClientProtocol):
    """An Autobahn WebSocket client that keeps what it received and how it was closed."""

    def onConnect(self, response):
        self.subprotocol = response.protocol  # the one the server selected, or None
        self.received = b""
        self.closed = None  # (code, reason) once closed

    def onMessage(self, payload, isBinary):
        self.received += payload

    def onClose(self, wasClean, code, reason):
        self.closed = (code, reason)


@dataclass
class ServerInit:
    width: int
    height: int
    name: str


@dataclass
class MemoryProxy(GrantsAndUrls):
    """One service on a memory clock, with its fake hypervisor and fake VNC server."""

    service: ConsoleProxyService
    hypervisor: FakeHypervisor
    vnc: FakeVncFactory
    reactor: MemoryReactorClockResolver
    network: MemoryNetwork
    key: str = API_KEY
    api_url: str = f"http://{HOST}:{API_PORT}"
    ws_url: str = f"ws://{HOST}:{CONSOLE_PORT}"
    xvpvnc_port: int = XVPVNC_PORT
    native_port: int = NATIVE_PORT
    _ports: object = field(default_factory=lambda: itertools.count(VNC_PORT + 1), repr=False)
    _agent: Agent = field(default=None, repr=False)

    def advance(self, seconds):
        """Let C{seconds} pass, in steps, delivering whatever the timers cause."""
        self.network.flush()
        while seconds > 0:
            pending = [c.getTime() - self.reactor.seconds() for c in self.reactor.getDelayedCalls()]
            step = min([d for d in pending if d > 0] + [seconds])
            self.reactor.advance(step)
            seconds -= step
            self.network.flush()

    def wait_until(self, done, timeout=20.0):
        """
        Pump, and let the clock run timer by timer, until C{done()} is true: what a blocking
        client's wait is on the memory tier.

        @return: the clock seconds that passed.
        @raise TimeoutError: when C{timeout} clock seconds pass first, or no timer is left.
        """
        start = self.reactor.seconds()
        self.network.flush()
        while not done():
            due = [c.getTime() for c in self.reactor.getDelayedCalls()]
            if not due or min(due) - start > timeout:
                raise TimeoutError(f"nothing happened within {timeout} clock seconds")
            self.reactor.advance(max(0.0, min(due) - self.reactor.seconds()))
            self.network.flush()
        return self.reactor.seconds() - start

    def serve(self, factory):
        """Listen with C{factory} on a fresh port of the memory network; return the port."""
        port = next(self._ports)
        self.network.listen(port, factory)
        return port

    def reconfigure(self, **changes):
        """Change config fields of the running service (as a reload would)."""
        ctx = self.service.ctx
        ctx.config = dataclasses.replace(ctx.config, **changes)

    def settle(self, deferred):
        """Pump until C{deferred} fired; return its result (or raise its failure)."""
        results = []
        deferred.addBoth(results.append)
        self.network.flush()
        assert results, "the in-memory exchange did not finish"
        result = results[0]
        if hasattr(result, "raiseException"):
            result.raiseException()
        return result

    def request(self, path, method="GET", body=None, key=None, headers=None, raw=None):
        """
        An HTTP request to the token API through Twisted's C{Agent}.

        @return: a L{Response}; error statuses are returned, not raised.
        """
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        sent = Headers()
        if data is not None:
            sent.addRawHeader("Content-Type", "application/json")
        if key is not None:
            sent.addRawHeader("X-Auth-Token", key)
        for name, value in (headers or {}).items():
            sent.addRawHeader(name, value)
        producer = None
        if data is not None:
            from io import BytesIO

            from twisted.web.client import FileBodyProducer
            producer = FileBodyProducer(BytesIO(data), cooperator=_ImmediateCooperator())
        url = path if path.startswith("http") else self.api_url + path
        response = self.settle(self._agent.request(method.encode(), url.encode(), sent, producer))
        payload = self.settle(readBody(response))
        ctype = (response.headers.getRawHeaders("Content-Type") or [""])[0].split(";")[0]
        if ctype.strip() == "application/json":
            payload = json.loads(payload)
        return Response(response.code, response.headers, payload)

    def call(self, path, method="GET", body=None, key=None, headers=None, raw=None):
        """(status, decoded JSON or raw bytes), as L{tests.support.api.call} answers."""
        response = self.request(path, method, body, key, headers, raw)
        return response.status, response.body

    def grant(self, instance, console_type="vnc", **extra):
        return self.call(f"/v1/instances/{instance}/console_access_token", "POST",
                         {"console_type": console_type, **extra}, key=self.key)

    def connect_tcp(self, port, source=None):
        """A L{TcpPipe} to C{port}, from the address C{source} (default 127.0.0.1)."""
        return TcpPipe(self, port, source)

    def xvp_connect(self, target, version="HTTP/1.0", headers=(), source=None):
        """
        Open an xvpvnc console as Nova's xvp viewer does (see L{tests.support.viewer.xvp_connect}).

        @return: C{(response up to its blank line, TcpPipe)}; the response is C{b""} if the
            server closed without one.
        """
        pipe = self.connect_tcp(self.xvpvnc_port, source)
        pipe.send(f"CONNECT {target} {version}\r\n".encode()
                  + b"".join(f"{h}\r\n".encode() for h in headers) + b"\r\n")
        response = pipe.read_until(b"\r\n\r\n")
        return (response if response.endswith(b"\r\n\r\n") else b""), pipe

    def websocket_pipe(self, url, **options):
        """L{open_websocket}, as a L{WebSocketPipe} for the blocking RFB viewer."""
        return WebSocketPipe(self, self.open_websocket(url, **options))

    def open_websocket(self, url, origin=None, cookie=None, protocols=None, source=None):
        """
        Open C{url} on the console listener with Autobahn's in-memory client, sending C{origin},
        C{cookie} (a Cookie header's value) and offering the subprotocols C{protocols}, from the
        address C{source} (default 127.0.0.1).

        @return: the connected L{WebSocketViewer}.
        @raise Exception: what Autobahn raises when the upgrade is refused.
        """
        console = self.service.getServiceNamed("console").factory

        peer = client_address(source or HOST)

        def server():
            return pausable(console.buildProtocol(peer), peer)

        agent = create_memory_agent(self.reactor, self.network, server)
        options = {"origin": origin} if origin else {}
        if cookie:
            options["headers"] = {"Cookie": cookie}
        if protocols:
            options["protocols"] = protocols
        parts = urlsplit(url)
        # The memory agent dials the URL's port; ours listens on CONSOLE_PORT in memory.
        url = parts._replace(netloc=f"{HOST}:{CONSOLE_PORT}").geturl()
        return self.settle(agent.open(url, options, protocol_class=WebSocketViewer))

    def rfb_handshake(self, viewer):
        """Run an RFB client handshake over C{viewer} up to ServerInit."""
        machine = UpstreamHandshake()
        events = machine.receive_data(viewer.received)
        viewer.received = b""
        self._send(viewer, machine.data_to_send())
        while not any(isinstance(e, (SecurityAccepted, HandshakeFailed)) for e in events):
            self.network.flush()
            assert viewer.closed is None, viewer.closed
            events += machine.receive_data(viewer.received)
            viewer.received = b""
            self._send(viewer, machine.data_to_send())
        accepted = events[-1]
        assert isinstance(accepted, SecurityAccepted), accepted
        self._send(viewer, client_init(shared=True))
        reader = ServerInitReader()
        events = reader.receive_data(accepted.leftover + viewer.received)
        viewer.received = b""
        assert len(events) == 1 and isinstance(events[0], ServerInitReceived), events
        message = events[0].message
        viewer.received = events[0].leftover
        width, height = struct.unpack("!HH", message[:4])
        return ServerInit(width, height, message[24:].decode())

    def framebuffer_update(self, viewer, incremental=False):
        """Ask for the whole framebuffer; return what came back (an update, or nothing)."""
        self._send(viewer, struct.pack("!BBHHHH", 3, int(incremental), 0, 0, WIDTH, HEIGHT))
        received, viewer.received = viewer.received, b""
        return received

    def upgrade(self, url, origin=None, cookie=None, source=None):
        """
        Ask for a WebSocket upgrade of C{url} on the console listener (from the address
        C{source}) and let the clock run until the answer is complete (a slowed refusal takes
        clock time); an accepted upgrade is dropped at once, without a close frame.

        @return: the L{_Answer}: C{status}, C{body} and the raw C{data} (head and body).
        """
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   + (f"Origin: {origin}\r\n" if origin else "")
                   + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n")
        answer = _Answer(request.encode())
        self.reactor.connectTCP(HOST, CONSOLE_PORT, OneShot(answer),
                                bindAddress=(source, 0) if source else None)
        self.wait_until(answer.complete, timeout=60)
        if answer.status == 101:
            answer.transport.loseConnection()
            self.network.flush()
        return answer

    def refusal(self, url, origin=None, cookie=None):
        """
        L{upgrade}, for an answer expected to be a refusal.

        @return: (HTTP status, decoded JSON body or C{None}).
        """
        answer = self.upgrade(url, origin, cookie)
        return answer.status, json.loads(answer.body) if answer.body else None

    def _send(self, viewer, data):
        if data:
            viewer.sendMessage(data, isBinary=True)
            self.network.flush()

    def stop(self):
        stopped = self.service.stopService()
        if stopped is not None:
            self.advance(5)
            self.settle(stopped)


class _Answer(Protocol):
    """Sends one request and keeps the HTTP answer (status line, headers, body)."""

    def __init__(self, request):
        self.request = request
        self.data = b""
        self.status = None
        self.body = b""
        self.lost = False

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.lost = True

    def complete(self):
        head, sep, body = self.data.partition(b"\r\n\r\n")
        if not sep:
            return False
        self.status = int(head.split(b" ", 2)[1])
        if self.status == 101:
            return True
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length and len(body) >= int(length.group(1)):
            self.body = body[:int(length.group(1))]
            return True
        self.body = body
        return self.lost


class _ImmediateCooperator:
    """Runs a body producer's steps at once: a memory test has no reactor to cooperate with."""

    def cooperate(self, iterator):
        from twisted.internet.defer import succeed
        for _ in iterator:
            pass

        class _Task:
            def whenDone(self):
                return succeed(iterator)

            def stop(self):
                pass
        return _Task()


#: The timings both integration proxies (in memory and on TCP) run with: short enough for tests,
#: the native-viewer silence shorter than a CONNECT client's first write.
TEST_TIMINGS = dict(vnc_handshake_timeout=5.0, vnc_connect_timeout=2.0, xvpvnc_native_wait=0.2)


def make_memory_proxy(tmp_path, **overrides):
    """A started L{MemoryProxy} with config fields overridden, as C{make_proxy} does on TCP."""
    reactor = MemoryReactorClockResolver()
    network = MemoryNetwork(reactor)
    fake_vnc = FakeVncFactory(password=b"secret1")
    network.listen(VNC_PORT, fake_vnc)
    hypervisor = FakeHypervisor(reactor)
    hypervisor.add_domain("vm1", uuid=VM,
                          vnc=VncEndpoint(host=HOST, port=VNC_PORT, password="secret1"))
    hypervisor.add_domain("off1", state="shutoff")
    settings = dict(
        api_listen=f"tcp:{API_PORT}:interface={HOST}",
        console_listen=f"tcp:{CONSOLE_PORT}:interface={HOST}",
        xvpvnc_listen=f"tcp:{XVPVNC_PORT}:interface={HOST}",
        vnc_listen=f"tcp:{NATIVE_PORT}:interface={HOST}",
        state_dir=str(tmp_path / "state"),
        **TEST_TIMINGS,
    )
    settings.update(overrides)
    service = ConsoleProxyService(config.defaults(**settings), reactor, hypervisor, [API_KEY])
    service.startService()
    for port, factory, _, _ in reactor.tcpServers:
        network.listen(port, factory)
    proxy = MemoryProxy(service, hypervisor, fake_vnc, reactor, network)
    proxy._agent = Agent.usingEndpointFactory(reactor, _Endpoints(reactor))
    network.flush()
    return proxy
