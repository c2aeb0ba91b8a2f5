"""
Tests for L{vncproxy.vnc.VncSession} on in-memory transports and a test clock: the fake VNC
server (tests/support/fakevnc.py) is joined to the session's upstream connection with iosim,
the viewer is a recorder on a StringTransport. No socket, no sleep.
"""

import struct

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test import iosim

from tests.support.fakevnc import HEIGHT, WIDTH, FakeVncFactory, pattern
from vncproxy import config
from vncproxy.closecodes import CloseCode
from vncproxy.context import ProxyContext
from vncproxy.hypervisor import DomainState, VncEndpoint
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.metrics import Metrics
from vncproxy.ratelimit import FailureLimiter
from vncproxy.sessions import SessionRegistry
from vncproxy.tokens import TokenStore
from vncproxy.vnc import State, VncSession

GREETING = b"RFB 003.008\n"
TIMEOUT, IDLE = 15.0, 600.0


class Viewer:
    """The viewer side as the session drives it: what it was sent, how it was closed."""

    def __init__(self):
        self.network_transport = StringTransport()
        self.sent = b""
        self.closed = None
        self.closes = 0
        self.paused = False

    def send(self, data):
        self.sent += data

    def splice_ready(self):
        return True

    def splice_header(self, n):
        return b""

    def close(self, code, reason):
        self.closes += 1
        self.closed = (code, reason)

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def take(self):
        data, self.sent = self.sent, b""
        return data


class World:
    def __init__(self, state=DomainState.RUNNING):
        self.reactor = MemoryReactorClock()
        self.hypervisor = FakeHypervisor()
        self.info = self.hypervisor.add_domain(
            "vm1", state=state, vnc=VncEndpoint(host="127.0.0.1", port=5901, password="secret1"))
        tokens, sessions = TokenStore(self.reactor, 180), SessionRegistry(2)
        self.ctx = ProxyContext(
            config=config.defaults(vnc_handshake_timeout=TIMEOUT, idle_timeout=IDLE,
                                   vnc_zero_copy=False),
            reactor=self.reactor, hypervisor=self.hypervisor, tokens=tokens, sessions=sessions,
            metrics=Metrics(tokens, sessions), limiter=FailureLimiter(self.reactor, 60, 5, 20))
        self.server = FakeVncFactory()
        self.pump = None

    def session(self):
        _, grant = self.ctx.tokens.mint(self.info.uuid, "vnc")
        self.viewer = Viewer()
        session = VncSession(self.ctx, grant, self.viewer, "192.0.2.1")
        session.register()
        session.start()
        return session

    def join_qemu(self):
        """Accept the session's pending connection with the fake VNC server (iosim)."""
        host, port, factory, _, _ = self.reactor.tcpClients.pop(0)
        assert (host, port) == ("127.0.0.1", 5901)
        client = factory.buildProtocol(IPv4Address("TCP", host, port))
        server = self.server.buildProtocol(None)
        self.pump = iosim.connect(
            server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client))
        self.pump.flush()

    def flush(self):
        if self.pump is not None:
            self.pump.flush()


@pytest.fixture
def world():
    return World()


def viewer_handshake(session, world):
    assert world.viewer.take() == GREETING
    session.viewer_data(GREETING)
    assert world.viewer.take() == b"\x01\x01"  # one security type: None
    session.viewer_data(b"\x01")
    assert world.viewer.take() == b"\x00\x00\x00\x00"
    session.viewer_data(b"\x00")  # ClientInit shared=0: the proxy sends shared=1 anyway
    world.flush()


def test_a_token_viewer_reaches_the_vnc_server(world):
    session = world.session()
    assert session.state is State.CONNECTING
    # Greeted at once, so that its answer travels while we reach QEMU; but not read, and
    # offered nothing, until QEMU accepted us (a console out of reach is refused in RFB terms).
    assert world.viewer.take() == GREETING and world.viewer.paused
    session.viewer_data(GREETING)  # (had it been read: held)
    assert world.viewer.sent == b""
    world.join_qemu()
    assert not world.viewer.paused
    assert session.state is State.DOWNSTREAM
    assert world.viewer.take() == b"\x01\x01"  # one security type: None
    session.viewer_data(b"\x01")
    assert world.viewer.take() == b"\x00\x00\x00\x00"
    session.viewer_data(b"\x00")
    world.flush()
    assert session.state is State.RELAYING
    init = world.viewer.take()
    assert struct.unpack("!HH", init[:4]) == (WIDTH, HEIGHT)
    assert init.endswith(b"fake vm")
    assert [c.shared for c in world.server.connections] == [True]
    session.viewer_data(struct.pack("!BBHHHH", 3, 0, 0, 0, WIDTH, HEIGHT))  # update request
    world.flush()
    assert world.viewer.take().endswith(pattern())
    assert session.bytes_to_viewer > len(pattern())


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_the_viewer_handshake_in_any_chunking(world, chunk):
    session = world.session()
    world.join_qemu()
    assert world.viewer.take() == GREETING
    data = GREETING + b"\x01" + b"\x01"
    for i in range(0, len(data), chunk):
        session.viewer_data(data[i:i + chunk])
    world.flush()
    assert world.viewer.sent.endswith(b"fake vm")


def test_a_stopped_instance_is_refused_in_rfb_terms(world):
    world.hypervisor.set_state(world.info.uuid, DomainState.SHUTOFF)
    session = world.session()
    assert world.reactor.tcpClients == []
    assert world.viewer.take() == GREETING
    session.viewer_data(GREETING)
    refusal = world.viewer.take()
    assert refusal.startswith(b"\x00") and b"instance is not running" in refusal
    assert world.viewer.closed[0] == CloseCode.INSTANCE_STOPPED
    assert world.ctx.sessions.sessions() == []


def test_an_unreachable_vnc_server_times_out_with_a_reason(world):
    session = world.session()
    world.reactor.advance(TIMEOUT)
    assert world.viewer.take() == GREETING
    assert world.viewer.closed is None  # the viewer is given time to read why
    assert session.state is State.REFUSING
    session.viewer_data(GREETING)
    assert b"timed out connecting to the VNC server" in world.viewer.take()
    assert world.viewer.closed[0] == CloseCode.CONSOLE_UNAVAILABLE
    assert session.state is State.CLOSED


def test_a_viewer_that_does_not_read_the_refusal_is_closed_after_as_long_again(world):
    world.session()
    world.reactor.advance(TIMEOUT)
    world.reactor.advance(TIMEOUT)
    assert world.viewer.closed[0] == CloseCode.CONSOLE_UNAVAILABLE
    assert world.reactor.getDelayedCalls() == []


def test_idle_sessions_close_and_release_everything(world):
    session = world.session()
    world.join_qemu()
    viewer_handshake(session, world)
    world.reactor.advance(IDLE)
    assert world.viewer.closed[0] == CloseCode.IDLE_TIMEOUT
    world.flush()
    assert world.server.connections == []
    assert world.ctx.sessions.sessions() == []
    assert world.reactor.getDelayedCalls() == []


def test_closing_from_the_registry_ends_the_relay_once(world):
    session = world.session()
    world.join_qemu()
    viewer_handshake(session, world)
    world.ctx.sessions.close_instance(world.info.uuid, CloseCode.INSTANCE_STOPPED)
    session.close(CloseCode.SERVICE_STOPPING)
    session.viewer_lost()
    assert world.viewer.closed[0] == CloseCode.INSTANCE_STOPPED and world.viewer.closes == 1
    world.flush()
    assert world.server.connections == [] and world.ctx.sessions.sessions() == []


def test_a_console_that_fails_after_the_viewers_version_is_refused_in_rfb_terms(world):
    world.server.password = b"other!!!"
    session = world.session()
    assert world.viewer.take() == GREETING
    session.viewer_data(GREETING)  # the viewer waits for the security offer
    world.join_qemu()
    refusal = world.viewer.take()
    assert refusal.startswith(b"\x00") and b"Authentication failed" in refusal
    assert world.viewer.closed[0] == CloseCode.CONSOLE_UNAVAILABLE
    assert session.state is State.CLOSED


def test_a_wrong_libvirt_password_is_explained(world):
    world.server.password = b"other!!!"
    session = world.session()
    world.join_qemu()
    assert world.viewer.take() == GREETING
    session.viewer_data(GREETING)
    assert b"Authentication failed" in world.viewer.take()
    assert world.viewer.closed[0] == CloseCode.CONSOLE_UNAVAILABLE


def test_a_vnc_server_that_talks_before_client_init_is_cut(world):
    session = world.session()
    world.join_qemu()
    world.server.connections[0].transport.write(b"x" * (64 * 1024 + 1))
    world.flush()
    assert world.viewer.closed == (CloseCode.CONSOLE_UNAVAILABLE,
                                   "console unavailable: VNC server sent unexpected data")
    assert session.state is State.CLOSED


@pytest.mark.parametrize("stopped", [True, False])
def test_the_vnc_server_closing_mid_session(world, stopped):
    """QEMU's connection ends while relaying: the viewer learns "instance stopped" when libvirt
    says so, else "console closed" after STOP_EVENT_WAIT."""
    session = world.session()
    world.join_qemu()
    viewer_handshake(session, world)
    if stopped:
        world.hypervisor.set_state(world.info.uuid, DomainState.SHUTOFF)
    world.server.connections[0].transport.loseConnection()
    world.flush()
    if stopped:
        assert world.viewer.closed[0] == CloseCode.INSTANCE_STOPPED
        assert world.reactor.getDelayedCalls() == []
        return
    assert world.viewer.closed is None and world.viewer.paused
    world.reactor.advance(3.0)
    assert world.viewer.closed[0] == CloseCode.CONSOLE_CLOSED
    assert session.state is State.CLOSED
