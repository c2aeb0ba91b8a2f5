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
from vncproxy.admission import ADDRESS_LOCKED
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
    assert transport.value() == failure(ADDRESS_LOCKED)
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


def test_guesses_from_other_addresses_never_lock_a_password_out(env):
    """Wrong passwords from many addresses cost those addresses only: the right password,
    from another address, still opens its console, and no password is revoked."""
    factory = xvpvnc.XvpVncFactory(env)
    _, grant = env.tokens.mint("uuid-1", "vnc")
    for i in range(5):
        for _ in range(3):
            protocol, transport = connect(env, host=f"192.0.2.{10 + i}", factory=factory)
            native_login(protocol, transport, env, b"WrongPw9")
            env.reactor.advance(1)
    assert env.tokens.password_instances() == {"uuid-1"}
    protocol, transport = connect(env, host="192.0.2.99", factory=factory)
    native_login(protocol, transport, env, grant.vnc_password.encode())
    assert len(sessions(env)) == 1


def answer(protocol, password):
    """On the native listener (greeted at once): version, security type, the response."""
    protocol.dataReceived(b"RFB 003.008\n\x02" + vnc_response(password, CHALLENGE))


def test_password_checks_take_turns_by_address(env):
    """Over the global budget, checks wait; one address's queue does not hold another's back."""
    env.guesses._rate, env.guesses._burst, env.guesses._tokens = 1.0, 1, 0.0
    env.guesses._stamp = env.reactor.seconds()
    factory = xvpvnc.XvpVncFactory(env, greet_at_once=True)
    _, grant = env.tokens.mint("uuid-1", "vnc")
    for _ in range(4):
        protocol, transport = connect(env, host="192.0.2.66", factory=factory)
        answer(protocol, b"WrongPw9")
    protocol, transport = connect(env, host="192.0.2.99", factory=factory)
    answer(protocol, grant.vnc_password.encode())
    assert sessions(env) == []
    assert env.guesses.waiting() == {"192.0.2.66": 4, "192.0.2.99": 1}
    env.reactor.advance(1)  # the flood's first check
    assert sessions(env) == []
    env.reactor.advance(1)  # then the other address's turn, before the rest of the flood
    assert len(sessions(env)) == 1
    assert env.guesses.waiting() == {"192.0.2.66": 3}


def test_a_queued_check_goes_with_its_connection(env):
    env.guesses._tokens = 0.0
    env.guesses._stamp = env.reactor.seconds()
    protocol, transport = connect(env, factory=xvpvnc.XvpVncFactory(env, greet_at_once=True))
    answer(protocol, b"WrongPw9")
    assert env.guesses.waiting() == {"192.0.2.1": 1}
    protocol.connectionLost(None)
    env.reactor.advance(5)
    assert env.metrics.refusals == {}


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


@pytest.mark.parametrize("pieces", [
    [b"RFB ", b"003.008\n"], [b"RFB ", b"RFB 003.008\n"], [b"R", b"FB ", b"RFB 003.008\n"],
    [b"RFB RFB 003.008\n"], [b"RFB 003.008\n"], [b"RF", b"B 0", b"03.008\n"],
    [b"RFB ", b"R", b"FB 003.008\n"], [b"RFB ", b"RFB 003", b".003\n"],
])
def test_an_early_rfb_is_a_native_viewer(env, pieces):
    """A viewer that says "RFB " before the greeting (GTK-VNC) is greeted at once, whether it
    then finishes its version or sends it whole again, in any chunking."""
    _, grant = env.tokens.mint("uuid-1", "vnc")
    protocol, transport = connect(env)
    protocol.dataReceived(pieces[0])
    if len(pieces[0]) >= 4:
        assert transport.value().startswith(GREETING)
    for piece in pieces[1:]:
        protocol.dataReceived(piece)
    v38 = b"008" in b"".join(pieces)
    assert transport.value() == GREETING + (b"\x01\x02" if v38 else b"\x00\x00\x00\x02" + CHALLENGE)
    if v38:
        protocol.dataReceived(b"\x02")
    transport.clear()
    protocol.dataReceived(vnc_response(grant.vnc_password.encode(), CHALLENGE))
    assert len(sessions(env)) == 1
    env.reactor.advance(WAIT * 2)
    assert GREETING not in transport.value()  # never greeted twice


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01", b"RFX "])
def test_garbage_is_a_protocol_error_not_a_bad_token(env, junk):
    """Bytes that are neither CONNECT nor RFB get 400 and never count against the address."""
    protocol, transport = connect(env)
    protocol.dataReceived(junk)
    assert transport.value() == b"HTTP/1.1 400 Invalid Request\r\n\r\n"
    assert env.metrics.refusals == {"protocol_error": 1}
    assert env.limiter.failed("192.0.2.1") == 0  # the first failure this address ever had


def test_the_native_listener_greets_at_once(env):
    _, grant = env.tokens.mint("uuid-1", "vnc")
    protocol, transport = connect(env, factory=xvpvnc.XvpVncFactory(env, greet_at_once=True))
    assert transport.value() == GREETING
    transport.clear()
    protocol.dataReceived(b"RFB 003.008\n\x02")
    assert transport.value() == b"\x01\x02" + CHALLENGE
    protocol.dataReceived(vnc_response(grant.vnc_password.encode(), CHALLENGE))
    assert len(sessions(env)) == 1


def test_the_native_listener_takes_no_connect(env):
    protocol, transport = connect(env, factory=xvpvnc.XvpVncFactory(env, greet_at_once=True))
    protocol.dataReceived(b"CONNECT /console?token=x HTTP/1.1\r\n\r\n")
    assert transport.disconnecting and sessions(env) == []


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
