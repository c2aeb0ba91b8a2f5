"""
An L{UpstreamHandshake} (RFB client) talking in memory to a
L{DownstreamHandshake} (RFB server): both sides must agree on every path.
"""

from hypothesis import example, given
from hypothesis import strategies as st

from vncproxy.rfb import (
    AuthResponse,
    ClientInitReceived,
    DownstreamHandshake,
    DownstreamState,
    HandshakeFailed,
    SecurityAccepted,
    UpstreamHandshake,
    UpstreamState,
    check_response,
    client_init,
)


def connect(upstream, downstream, password=None, max_chunk=None):
    """
    Pump bytes between the two machines until both are quiet, acting as the
    glue: judge AuthResponse with C{password}, send ClientInit (shared) after
    SecurityAccepted.

    @param max_chunk: deliver bytes in pieces of at most this size.
    @return: C{(upstream_events, downstream_events)}.
    """
    up_events, down_events = [], []
    downstream.initiate()
    to_upstream, to_downstream = b"", b""
    while True:
        to_upstream += downstream.data_to_send()
        to_downstream += upstream.data_to_send()
        if not to_upstream and not to_downstream:
            return up_events, down_events
        size = max_chunk or max(len(to_upstream), len(to_downstream), 1)
        chunk, to_upstream = to_upstream[:size], to_upstream[size:]
        for event in upstream.receive_data(chunk):
            up_events.append(event)
            if isinstance(event, SecurityAccepted):
                to_downstream += client_init(True)
        chunk, to_downstream = to_downstream[:size], to_downstream[size:]
        for event in downstream.receive_data(chunk):
            down_events.append(event)
            if isinstance(event, AuthResponse):
                if check_response(password, event.challenge, event.response):
                    down_events += downstream.accept()
                else:
                    down_events += downstream.reject("Authentication failed")


def test_none():
    """Without authentication both sides complete a 3.8 handshake."""
    up, down = UpstreamHandshake(), DownstreamHandshake()
    up_events, down_events = connect(up, down)
    assert up_events == [SecurityAccepted((3, 8), b"")]
    assert down_events == [ClientInitReceived(True, (3, 8), b"")]


def test_none_while_upstream_has_password():
    """A password on the client side is not used when the server offers None."""
    up, down = UpstreamHandshake(b"secret"), DownstreamHandshake(auth="none")
    up_events, down_events = connect(up, down)
    assert up_events == [SecurityAccepted((3, 8), b"")]
    assert down_events == [ClientInitReceived(True, (3, 8), b"")]


def test_vnc_auth_accepted():
    """With the right password the response checks out, accept() lets both sides finish."""
    up = UpstreamHandshake(b"secret")
    down = DownstreamHandshake(auth="vnc")
    up_events, down_events = connect(up, down, password=b"secret")
    assert up_events == [SecurityAccepted((3, 8), b"")]
    assert isinstance(down_events[0], AuthResponse)
    assert down_events[1:] == [ClientInitReceived(True, (3, 8), b"")]
    assert up.state is UpstreamState.DONE
    assert down.state is DownstreamState.DONE


def test_vnc_auth_rejected():
    """With a wrong password reject() reaches the client with its reason."""
    up = UpstreamHandshake(b"wrong")
    down = DownstreamHandshake(auth="vnc")
    up_events, down_events = connect(up, down, password=b"secret")
    assert up_events == [HandshakeFailed("VNC authentication failed: Authentication failed")]
    assert down_events[1:] == [HandshakeFailed("Authentication failed")]
    assert up.state is UpstreamState.FAILED
    assert down.state is DownstreamState.FAILED


def test_vnc_auth_without_password():
    """A client without a password gives up when the server asks for one."""
    up = UpstreamHandshake()
    down = DownstreamHandshake(auth="vnc")
    up_events, down_events = connect(up, down, password=b"secret")
    assert up_events == [
        HandshakeFailed("VNC server requires a password but none is configured")
    ]
    assert down_events == []
    assert down.state is DownstreamState.AWAIT_SECURITY_CHOICE


def test_refused():
    """In refuse mode the client learns the server's reason."""
    up = UpstreamHandshake(b"secret")
    down = DownstreamHandshake(auth="vnc", refuse="instance is not running")
    up_events, down_events = connect(up, down)
    assert up_events == [
        HandshakeFailed("VNC server refused the connection: instance is not running")
    ]
    assert down_events == [HandshakeFailed("instance is not running")]


def _des_key_bits(password):
    # VNC reverses each key byte's bits and DES ignores every byte's low (parity) bit, so the
    # high bit of each password byte never counts: b"\x80" and b"" are the same password.
    return bytes(b & 0x7F for b in password[:8].ljust(8, b"\0"))


@given(
    client_password=st.binary(max_size=12),
    server_password=st.binary(max_size=12),
    max_chunk=st.one_of(st.none(), st.integers(1, 20)),
)
@example(client_password=b"", server_password=b"\x80", max_chunk=None)
@example(client_password=b"secret1", server_password=b"secret2", max_chunk=None)
def test_vnc_auth_outcome(client_password, server_password, max_chunk):
    """Authentication succeeds exactly when both 8-byte DES keys match (high bits ignored)."""
    up = UpstreamHandshake(client_password)
    down = DownstreamHandshake(auth="vnc")
    up_events, down_events = connect(up, down, server_password, max_chunk)
    same = _des_key_bits(client_password) == _des_key_bits(server_password)
    if same:
        assert up_events == [SecurityAccepted((3, 8), b"")]
        assert down_events[-1] == ClientInitReceived(True, (3, 8), b"")
    else:
        assert up_events == [
            HandshakeFailed("VNC authentication failed: Authentication failed")
        ]
        assert down_events[-1] == HandshakeFailed("Authentication failed")
