"""
Tests for L{vncproxy.xvpvnc.XvpVncProtocol} on a fake clock and a StringTransport: telling
CONNECT clients from native viewers, the CONNECT answers, native VNC Authentication against
the one-time passwords, the failure limits and the handshake time-out. The session itself is
replaced by a recorder (the integration tests run the real one).
"""

import struct
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from vncproxy import config, xvpvnc
from vncproxy.context import ProxyContext
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.metrics import Metrics
from vncproxy.ratelimit import FailureLimiter
from vncproxy.rfb import DownstreamState, vnc_response
from vncproxy.sessions import SessionRegistry
from vncproxy.tokens import TokenStore
from vncproxy.vnc import VncSession

WAIT, TIMEOUT = 2.0, 15.0
GREETING = b"RFB 003.008\n"
CHALLENGE = bytes(range(16))


class RecordedSession:
    def __init__(self, ctx, grant, viewer, peer, downstream=None):
        self.ctx = ctx
        self.grant, self.viewer, self.peer, self.downstream = grant, viewer, peer, downstream
        self.started = False
        self.data = b""
        self.lost = False

    register = VncSession.register
    _ctx = property(lambda self: self.ctx)
    _grant = property(lambda self: self.grant)
    _viewer = property(lambda self: self.viewer)

    def start(self):
        self.started = True

    def viewer_data(self, data):
        self.data += data

    def viewer_lost(self):
        self.lost = True

    def close(self, code, detail=None):
        pass


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setattr(xvpvnc, "VncSession", RecordedSession)
    monkeypatch.setattr("vncproxy.rfb.downstream.new_challenge", lambda randbytes: CHALLENGE)
    clock = Clock()
    cfg = config.defaults(xvpvnc_native_wait=WAIT, vnc_handshake_timeout=TIMEOUT,
                          xvpvnc_max_failures_per_instance=5, ratelimit_window=60)
    tokens, sessions = TokenStore(clock, 180), SessionRegistry(2)
    ctx = ProxyContext(config=cfg, reactor=clock, hypervisor=FakeHypervisor(), tokens=tokens,
                       sessions=sessions, metrics=Metrics(tokens, sessions),
                       limiter=FailureLimiter(clock, 60, slow_after=1, refuse_after=3))
    return ctx


def connect(ctx, host="192.0.2.1", factory=None):
    factory = factory or xvpvnc.XvpVncFactory(ctx)
    protocol = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50000))
    protocol.makeConnection(transport)
    return protocol, transport


def sessions(ctx):
    return ctx.sessions.sessions()


def native_login(protocol, transport, ctx, password, version=b"RFB 003.008\n"):
    ctx.reactor.advance(WAIT)
    assert transport.value() == GREETING
    transport.clear()
    protocol.dataReceived(version)
    if version != b"RFB 003.003\n":
        assert transport.value() == b"\x01\x02"
        protocol.dataReceived(b"\x02")
    assert transport.value().endswith(CHALLENGE)
    transport.clear()
    protocol.dataReceived(vnc_response(password, CHALLENGE))


def failure(reason):
    return struct.pack("!II", 1, len(reason)) + reason.encode()


# -- telling the two kinds apart -------------------------------------------------------------------


def test_silent_client_is_greeted_after_the_wait(env):
    """Nothing is sent before native_wait; then RFB 003.008."""
    _, transport = connect(env)
    env.reactor.advance(WAIT - 0.01)
    assert transport.value() == b""
    env.reactor.advance(0.01)
    assert transport.value() == GREETING


def test_connect_client_is_never_greeted(env):
    """A client that starts with CONNECT gets no RFB greeting, however long it takes."""
    protocol, transport = connect(env)
    protocol.dataReceived(b"CONN")
    env.reactor.advance(WAIT * 3)
    assert transport.value() == b""


# -- CONNECT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_connect_admits_and_hands_over(env, pieces):
    """A valid CONNECT (in any pieces) gets exactly 200 OK and a started session with the leftover."""
    token, grant = env.tokens.mint("uuid-1", "vnc")
    protocol, transport = connect(env)
    data = f"CONNECT /console?token={token} HTTP/1.0\r\n\r\n".encode() + b"RFB"
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        protocol.dataReceived(data[i:i + step])
    assert transport.value() == b"HTTP/1.1 200 OK\r\n\r\n"
    [session] = sessions(env)
    assert session.grant == grant and session.started and session.downstream is None
    assert session.data == b"RFB" and session.peer == "192.0.2.1"
    protocol.dataReceived(b" 003.008\n")
    assert session.data == b"RFB 003.008\n"
    env.reactor.advance(TIMEOUT * 2)  # the session owns the time-out now
    assert not transport.disconnecting
    protocol.connectionLost(None)
    assert session.lost


@pytest.mark.parametrize("request_line, response", [
    (b"CONNECT /console?token=nope HTTP/1.1\r\n\r\n", b"HTTP/1.1 401 Not Authorized\r\n\r\n"),
    (b"CONNECT /console HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Invalid Request\r\n\r\n"),
    (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Invalid Request\r\n\r\n"),
])
def test_connect_refusals(env, request_line, response):
    """Bad, missing or junk requests get their exact status line, then the connection closes."""
    protocol, transport = connect(env)
    protocol.dataReceived(request_line)
    assert transport.value() == response
    assert transport.disconnecting and sessions(env) == []
    protocol.dataReceived(b"more")  # ignored once closing
    assert transport.value() == response


def test_serial_token_is_not_a_vnc_console(env):
    """A serial console's token does not open a VNC console (401)."""
    token, _ = env.tokens.mint("uuid-1", "serial")
    protocol, transport = connect(env)
    protocol.dataReceived(f"CONNECT /console?token={token} HTTP/1.1\r\n\r\n".encode())
    assert transport.value() == b"HTTP/1.1 401 Not Authorized\r\n\r\n"


def test_connect_at_the_session_limit(env):
    """An instance at its session limit gets 409 Conflict."""
    for _ in range(2):
        env.sessions.admit("uuid-1", "vnc", object(), "xvpvnc")
    token, _ = env.tokens.mint("uuid-1", "vnc")
    protocol, transport = connect(env)
    protocol.dataReceived(f"CONNECT /console?token={token} HTTP/1.1\r\n\r\n".encode())
    assert transport.value() == b"HTTP/1.1 409 Conflict\r\n\r\n"
    assert env.metrics.refusals == {"limit_reached": 1}


def test_stalled_connect_times_out(env):
    """A half-sent CONNECT is closed at the handshake time-out, with no answer."""
    protocol, transport = connect(env)
    protocol.dataReceived(b"CONNECT /console?token=abc")
    env.reactor.advance(TIMEOUT - 0.01)
    assert not transport.disconnecting
    env.reactor.advance(0.01)
    assert transport.disconnecting and transport.value() == b""


# -- native ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.008\n"])
def test_native_password_selects_the_grant(env, version):
    """The one-time password's response consumes its grant and hands the waiting handshake to a session."""
    _, other = env.tokens.mint("uuid-2", "vnc")
    token, grant = env.tokens.mint("uuid-1", "vnc")
    protocol, transport = connect(env)
    native_login(protocol, transport, env, grant.vnc_password.encode(), version)
    [session] = sessions(env)
    assert session.grant == grant and session.started
    assert session.downstream.state is DownstreamState.AWAIT_AUTH_DECISION
    assert transport.value() == b""  # the SecurityResult waits for QEMU
    assert env.tokens.password_instances() == {"uuid-2"}


def test_wrong_password_fails_with_a_reason(env):
    """A wrong password gets SecurityResult failed with 'authentication failed' and a close; it is counted."""
    env.tokens.mint("uuid-1", "vnc")
    protocol, transport = connect(env)
    native_login(protocol, transport, env, b"WrongPw9")
    assert transport.value() == failure("authentication failed")
    assert transport.disconnecting and sessions(env) == []
    assert env.metrics.refusals == {"token_invalid": 1}


def test_repeated_wrong_passwords_are_answered_later(env):
    """Beyond the limiter's slow_after, the failure answer is delayed (the address is rate limited)."""
    env.tokens.mint("uuid-1", "vnc")
    protocol, transport = connect(env)
    native_login(protocol, transport, env, b"WrongPw9")
    protocol, transport = connect(env)
    native_login(protocol, transport, env, b"WrongPw9")
    assert transport.value() == b""
    env.reactor.advance(0.25)
    assert transport.value() == failure("authentication failed")


def test_address_limit(env):
    """After 3 failures from one address, even the right password is refused from it, not from others."""
    factory = xvpvnc.XvpVncFactory(env)
    _, grant = env.tokens.mint("uuid-1", "vnc")
    for _ in range(3):
        protocol, transport = connect(env, factory=factory)
        native_login(protocol, transport, env, b"WrongPw9")
        env.reactor.advance(1)
    protocol, transport = connect(env, factory=factory)
    native_login(protocol, transport, env, grant.vnc_password.encode())
    assert transport.value() == failure(xvpvnc.ADDRESS_LOCKED)
    assert env.metrics.refusals["too_many_failed_attempts"] == 1
    protocol, transport = connect(env, host="192.0.2.2", factory=factory)
    native_login(protocol, transport, env, grant.vnc_password.encode())
    assert len(sessions(env)) == 1


def test_bad_tokens_and_wrong_passwords_share_the_address_limit(env):
    """Bad CONNECT tokens count toward the same per-address limit as wrong passwords."""
    factory = xvpvnc.XvpVncFactory(env)
    for _ in range(3):
        protocol, transport = connect(env, factory=factory)
        protocol.dataReceived(b"CONNECT /console?token=nope HTTP/1.1\r\n\r\n")
        env.reactor.advance(1)
        assert transport.value() == b"HTTP/1.1 401 Not Authorized\r\n\r\n"
    token, _ = env.tokens.mint("uuid-1", "vnc")
    protocol, transport = connect(env, factory=factory)
    protocol.dataReceived(f"CONNECT /console?token={token} HTTP/1.1\r\n\r\n".encode())
    assert transport.value() == b"HTTP/1.1 429 Too Many Requests\r\n\r\n"


def test_instance_limit_revokes_the_password(env):
    """Over the instance's limit, its right password is refused and revoked; the token survives."""
    factory = xvpvnc.XvpVncFactory(env)
    token, grant = env.tokens.mint("uuid-1", "vnc")
    for i in range(5):
        protocol, transport = connect(env, host=f"192.0.2.{10 + i}", factory=factory)
        native_login(protocol, transport, env, b"WrongPw9")
    protocol, transport = connect(env, host="192.0.2.99", factory=factory)
    native_login(protocol, transport, env, grant.vnc_password.encode())
    assert transport.value() == failure(xvpvnc.INSTANCE_LOCKED)
    assert env.metrics.refusals["too_many_failed_attempts"] == 1
    assert env.tokens.password_instances() == set()
    assert env.tokens.consume(token) == grant


def test_failures_count_only_against_instances_with_live_passwords(env):
    """A wrong guess counts against instances that had a live password, not against later ones."""
    factory = xvpvnc.XvpVncFactory(env)
    for i in range(5):
        protocol, transport = connect(env, host=f"192.0.2.{10 + i}", factory=factory)
        native_login(protocol, transport, env, b"WrongPw9")
    _, grant = env.tokens.mint("uuid-1", "vnc")
    protocol, transport = connect(env, host="192.0.2.99", factory=factory)
    native_login(protocol, transport, env, grant.vnc_password.encode())
    assert len(sessions(env)) == 1


def test_native_session_limit(env):
    """A native login to an instance at its limit fails with the reason."""
    for _ in range(2):
        env.sessions.admit("uuid-1", "vnc", object(), "xvpvnc")
    _, grant = env.tokens.mint("uuid-1", "vnc")
    protocol, transport = connect(env)
    native_login(protocol, transport, env, grant.vnc_password.encode())
    assert transport.value().startswith(b"\x00\x00\x00\x01")
    assert b"limit reached" in transport.value()


def test_native_stall_times_out(env):
    """A native viewer that never answers the greeting is closed at the handshake time-out."""
    protocol, transport = connect(env)
    env.reactor.advance(WAIT)  # the greeting goes out a reactor turn after the wait
    env.reactor.advance(TIMEOUT - WAIT)
    assert transport.value() == GREETING and transport.disconnecting


def test_native_junk_closes(env):
    """Junk instead of a version closes the connection without a session."""
    protocol, transport = connect(env)
    env.reactor.advance(WAIT)
    protocol.dataReceived(b"SSH-2.0-OpenSSH\r\n")
    assert transport.disconnecting and sessions(env) == []


def test_timers_stop_with_the_connection(env):
    """A connection lost early leaves no timer behind."""
    protocol, _ = connect(env)
    protocol.connectionLost(None)
    assert env.reactor.getDelayedCalls() == []
