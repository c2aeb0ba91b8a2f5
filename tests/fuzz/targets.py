"""
The fuzz targets: one function per parser or machine, taking one byte string and raising
C{AssertionError} (or any other exception) only when an invariant breaks.

The same functions run under hypothesis in the suite (tests/fuzz/test_*_fuzz.py), under
atheris for long runs (fuzz/*.py at the repo root) and replay the kept crashers
(tests/fuzz/regressions/TARGET/*, see test_regressions.py). The first bytes of an input choose
the configuration and how the rest is cut into chunks, so a coverage-guided fuzzer explores
those too.
"""

import random
import unicodedata
from dataclasses import replace

from tests.fuzz import wsframe_targets
from vncproxy.httpconnect import MAX_REQUEST, BadRequest, ConnectRequest, ConnectRequestParser
from vncproxy.rfb import (
    AuthResponse,
    ClientInitReceived,
    DownstreamHandshake,
    DownstreamState,
    HandshakeFailed,
    SecurityAccepted,
    StartTLS,
    UpstreamHandshake,
    UpstreamState,
    wire,
)

PASSWORD = b"hunter2"


def chunks_of(stream, seed):
    """
    Cut C{stream} into chunks of pseudo-random sizes (0 to 40 bytes) drawn from C{seed}.
    """
    rng = random.Random(seed)
    chunks, at = [], 0
    while at < len(stream):
        size = rng.choice((0, 1, 1, 2, 3, 4, 7, 12, 16, 40))
        chunks.append(stream[at:at + size])
        at += size
    return chunks


def _clean_reason(reason):
    assert isinstance(reason, str) and reason
    assert PASSWORD.decode() not in reason
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in reason), repr(reason)


def _check_terminal(machine, events, terminal_types, done, failed):
    """
    The shared invariant of both machines after a run: at most one terminal event, last; the
    state matches it; a finished machine accepts and sends nothing more.
    """
    terminal = [e for e in events if isinstance(e, terminal_types)]
    assert len(terminal) <= 1, events
    if terminal:
        assert events[-1] is terminal[0], events
        if isinstance(terminal[0], HandshakeFailed):
            assert machine.state is failed
            _clean_reason(terminal[0].reason)
        else:
            assert machine.state is done
        machine.data_to_send()
        assert machine.receive_data(b"RFB 003.008\n\x01\x02" * 4) == []
        assert machine.data_to_send() == b""
    else:
        assert machine.state not in (done, failed)
    assert len(machine._buffer) <= wire.MAX_BUFFERED


def rfb_upstream(data):
    """
    L{UpstreamHandshake} (the proxy as RFB client, toward QEMU) fed C{data[2:]} as the server's
    bytes. C{data[0]} picks password and TLS mode, C{data[1]} the chunking.
    """
    if len(data) < 2:
        return
    config, seed, stream = data[0], data[1], data[2:]
    password = PASSWORD if config & 1 else None
    tls = (None, "x509", "anonymous", None)[(config >> 1) & 3]
    start_tls = bool(config & 8)
    machine = UpstreamHandshake(password, tls=tls)
    events = []
    for chunk in chunks_of(stream, seed):
        new = machine.receive_data(chunk)
        for event in new:
            assert isinstance(event, (HandshakeFailed, SecurityAccepted, StartTLS)), event
            if isinstance(event, StartTLS):
                assert tls is not None and machine.state is UpstreamState.AWAIT_TLS
        events += [e for e in new if not isinstance(e, StartTLS)]
        if machine.state is UpstreamState.AWAIT_TLS and start_tls:
            events += machine.tls_started()
        if PASSWORD in machine.data_to_send():
            raise AssertionError("the password itself went on the wire")
        if machine.state in (UpstreamState.DONE, UpstreamState.FAILED):
            break
    _check_terminal(machine, events, (HandshakeFailed, SecurityAccepted),
                    UpstreamState.DONE, UpstreamState.FAILED)
    if events and isinstance(events[-1], SecurityAccepted):
        assert events[-1].version in (wire.RFB_3_3, wire.RFB_3_7, wire.RFB_3_8)


def rfb_downstream(data):
    """
    L{DownstreamHandshake} (the proxy as RFB server, toward a viewer) fed C{data[2:]} as the
    viewer's bytes. C{data[0]} picks auth, refusal, whether we greet first, the decisions on
    AuthResponse, and C{hold} (the decision after the version exchange, taken before any byte
    or when the machine waits for it, as the session does); C{data[1]} the chunking.
    """
    if len(data) < 2:
        return
    config, seed, stream = data[0], data[1], data[2:]
    auth = "vnc" if config & 1 else "none"
    refuse = "refused by the fuzzer" if config & 2 else None
    hold = bool(config & 16)
    machine = DownstreamHandshake(auth=auth, refuse=refuse, randbytes=lambda n: b"\x5a" * n,
                                  hold=hold)
    if not config & 4:
        machine.initiate()
    accept = bool(config & 8)
    events = []
    held = hold and refuse is None

    def decide_held():
        nonlocal held
        held = False
        return machine.accept() if accept else machine.reject("no entry")

    if held and config & 32:
        events += decide_held()
    for chunk in chunks_of(stream, seed):
        new = machine.receive_data(chunk)
        if held and machine.state is DownstreamState.AWAIT_AUTH_DECISION:
            assert machine.decision_pending and machine.version is not None
            new += decide_held()
        for event in new:
            assert isinstance(event, (HandshakeFailed, ClientInitReceived, AuthResponse)), event
            events.append(event)
            if isinstance(event, AuthResponse):
                assert auth == "vnc" and len(event.response) == 16
                assert machine.state is DownstreamState.AWAIT_AUTH_DECISION
                events += machine.accept() if accept else machine.reject("no entry")
        machine.data_to_send()
        if machine.state in (DownstreamState.DONE, DownstreamState.FAILED):
            break
    final = [e for e in events if not isinstance(e, AuthResponse)]
    assert all(isinstance(e, AuthResponse) for e in events[:len(events) - len(final)])
    _check_terminal(machine, final, (HandshakeFailed, ClientInitReceived),
                    DownstreamState.DONE, DownstreamState.FAILED)
    if final and isinstance(final[-1], ClientInitReceived):
        assert refuse is None and (not hold or accept)


def connect_request(data):
    """
    L{ConnectRequestParser} (the xvpvnc CONNECT request) fed C{data[1:]}, chunked by
    C{data[0]}: a request, "need more" or L{BadRequest} -- never another exception; a request
    needs at most L{MAX_REQUEST} bytes and never puts the token in its repr.
    """
    if not data:
        return
    parser = ConnectRequestParser()
    fed = 0
    try:
        for chunk in chunks_of(data[1:], data[0]):
            fed += len(chunk)
            result = parser.receive_data(chunk)
            if result is not None:
                assert isinstance(result, ConnectRequest)
                assert fed - len(result.leftover) <= MAX_REQUEST
                assert result.version in ("HTTP/1.0", "HTTP/1.1")
                if result.token:
                    # the repr does not depend on the secret (a one-letter token such as "c"
                    # is in any repr: comparing with another secret is the exact check)
                    other = replace(result, target="/console?token=REDACTED", token="REDACTED")
                    assert repr(result) == repr(other)
                    assert "REDACTED" not in repr(other)
                return
    except BadRequest as e:
        assert str(e) and len(str(e)) < 100
        return
    assert fed <= MAX_REQUEST  # still waiting: only while the request may yet be short


# -- seeds: valid transcripts (config byte, chunking byte, stream) --------------------------------

_V33, _V37, _V38 = b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.008\n"
_OK, _FAIL = b"\0\0\0\0", b"\0\0\0\1"
_CHALLENGE = bytes(range(16))


def _reason(text):
    return len(text).to_bytes(4, "big") + text


#: What a VNC server says, with the config byte of L{rfb_upstream} that makes it succeed.
UPSTREAM_SEEDS = [
    bytes([0, 0]) + _V38 + b"\x01\x01" + _OK,
    bytes([1, 1]) + _V38 + b"\x01\x02" + _CHALLENGE + _OK,
    bytes([1, 2]) + _V38 + b"\x01\x02" + _CHALLENGE + _FAIL + _reason(b"Authentication failed"),
    bytes([0, 3]) + _V37 + b"\x02\x01\x02",
    bytes([1, 4]) + _V33 + b"\0\0\0\x02" + _CHALLENGE + _OK,
    bytes([0, 5]) + _V33 + b"\0\0\0\0" + _reason(b"Too many security failures"),
    bytes([0, 6]) + _V38 + b"\0" + _reason(b"go away"),
    # VeNCrypt, x509 (config 2) and anonymous (config 4), TLS started (config 8)
    bytes([2 | 8, 7]) + _V38 + b"\x01\x13" + b"\0\x02\0" + b"\x01\0\0\x01\x04" + b"\x01" + _OK,
    bytes([4 | 8 | 1, 8]) + _V38 + b"\x01\x13" + b"\0\x02\0" + b"\x02\0\0\x01\x01\0\0\x01\x02"
    + b"\x01" + _CHALLENGE + _OK,
]

#: What a viewer says, with the config byte of L{rfb_downstream} that makes it succeed.
DOWNSTREAM_SEEDS = [
    bytes([0, 0]) + _V38 + b"\x01" + b"\x01",
    bytes([1 | 8, 1]) + _V38 + b"\x02" + _CHALLENGE + b"\x01",
    bytes([1, 2]) + _V38 + b"\x02" + _CHALLENGE,
    bytes([0, 3]) + _V37 + b"\x01" + b"\x00" + b"leftover",
    bytes([1 | 8, 4]) + _V33 + _CHALLENGE + b"\x01",
    bytes([2, 5]) + _V38,
    bytes([4, 6]) + _V38,
]

CONNECT_SEEDS = [
    b"\x00CONNECT /console?token=abc HTTP/1.1\r\nHost: x\r\n\r\nRFB 003.008\n",
    b"\x01CONNECT /console?token=abc HTTP/1.0\n\n",
    b"\x02CONNECT /console HTTP/1.0\r\nUser-Agent: xvp\r\n folded\r\n\r\n",
    b"\x03CONNECT http://proxy:6081/console?token=abc&x=1 HTTP/1.1\r\n\r\n",
]

SEEDS = {
    "rfb_upstream": UPSTREAM_SEEDS,
    "rfb_downstream": DOWNSTREAM_SEEDS,
    "connect_request": CONNECT_SEEDS,
    "websocket_frames": wsframe_targets.SEEDS,
}

TARGETS = {
    "rfb_upstream": rfb_upstream,
    "rfb_downstream": rfb_downstream,
    "connect_request": connect_request,
    "websocket_frames": wsframe_targets.websocket_frames,
}
