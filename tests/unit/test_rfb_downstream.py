"""
Tests for L{vncproxy.rfb.downstream.DownstreamHandshake}, the RFB server the
proxy runs toward a viewer.  The challenge is the one QEMU 7.2 sent in the
testbed (docs/qemu-facts.md); the viewer's responses are what a viewer computes.
"""

import struct
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.chunks import split
from vncproxy.rfb import (
    AuthResponse,
    ClientInitReceived,
    DownstreamHandshake,
    DownstreamState,
    HandshakeFailed,
    check_response,
)

VER33 = b"RFB 003.003\n"
VER37 = b"RFB 003.007\n"
VER38 = b"RFB 003.008\n"
QEMU_CHALLENGE = bytes.fromhex("737da4e29ed60ba9a0324f57f08a4053")
PASSWORD = b"secret"
#: DES response for PASSWORD and QEMU_CHALLENGE, computed with OpenSSL.
RESPONSE = bytes.fromhex("a59937616d88bd5acc077686e8bcb3f1")
WRONG_RESPONSE = bytes(16)
OK = b"\x00\x00\x00\x00"
FAILED = b"\x00\x00\x00\x01"
#: What a viewer typically sends right after ClientInit (SetEncodings: Raw).
SET_ENCODINGS = bytes.fromhex("02000001" "00000000")


def reason(text: bytes) -> bytes:
    return struct.pack("!I", len(text)) + text


def fixed_challenge(n):
    assert n == 16
    return QEMU_CHALLENGE


def new_machine(auth="none", refuse=None):
    machine = DownstreamHandshake(auth=auth, refuse=refuse, randbytes=fixed_challenge)
    machine.initiate()
    return machine


def glue_decide(machine, event):
    """
    What the glue does with an AuthResponse: check it against PASSWORD.
    """
    if check_response(PASSWORD, event.challenge, event.response):
        return machine.accept()
    return machine.reject("Authentication failed")


@dataclass(frozen=True)
class Vector:
    name: str
    auth: str
    refuse: str | None
    client: bytes
    server: bytes
    events: tuple

    def __str__(self):
        return self.name


def done(shared, version):
    return ClientInitReceived(shared, version, b"")


AUTH_OK = AuthResponse(QEMU_CHALLENGE, RESPONSE)
AUTH_WRONG = AuthResponse(QEMU_CHALLENGE, WRONG_RESPONSE)
REJECTED = HandshakeFailed("Authentication failed")

SUCCESS = [
    Vector(
        "3.8-none-shared",
        "none",
        None,
        VER38 + b"\x01" + b"\x01",
        VER38 + b"\x01\x01" + OK,
        (done(True, (3, 8)),),
    ),
    Vector(
        "3.8-none-exclusive",
        "none",
        None,
        VER38 + b"\x01" + b"\x00",
        VER38 + b"\x01\x01" + OK,
        (done(False, (3, 8)),),
    ),
    Vector(
        "3.7-none",
        "none",
        None,
        VER37 + b"\x01" + b"\x01",
        VER38 + b"\x01\x01",
        (done(True, (3, 7)),),
    ),
    Vector(
        "3.3-none",
        "none",
        None,
        VER33 + b"\x01",
        VER38 + b"\x00\x00\x00\x01",
        (done(True, (3, 3)),),
    ),
    Vector(
        "3.8-vnc-accept",
        "vnc",
        None,
        VER38 + b"\x02" + RESPONSE + b"\x01",
        VER38 + b"\x01\x02" + QEMU_CHALLENGE + OK,
        (AUTH_OK, done(True, (3, 8))),
    ),
    Vector(
        "3.7-vnc-accept",
        "vnc",
        None,
        VER37 + b"\x02" + RESPONSE + b"\x01",
        VER38 + b"\x01\x02" + QEMU_CHALLENGE + OK,
        (AUTH_OK, done(True, (3, 7))),
    ),
    Vector(
        "3.3-vnc-accept",
        "vnc",
        None,
        VER33 + RESPONSE + b"\x00",
        VER38 + b"\x00\x00\x00\x02" + QEMU_CHALLENGE + OK,
        (AUTH_OK, done(False, (3, 3))),
    ),
    Vector(
        "3.5-is-3.3",
        "none",
        None,
        b"RFB 003.005\n" + b"\x01",
        VER38 + b"\x00\x00\x00\x01",
        (done(True, (3, 3)),),
    ),
    Vector(
        "apple-3.889-is-3.3",
        "none",
        None,
        b"RFB 003.889\n" + b"\x01",
        VER38 + b"\x00\x00\x00\x01",
        (done(True, (3, 3)),),
    ),
    Vector(
        "4.0-is-3.8",
        "none",
        None,
        b"RFB 004.000\n" + b"\x01" + b"\x01",
        VER38 + b"\x01\x01" + OK,
        (done(True, (3, 8)),),
    ),
    Vector(
        "shared-flag-any-nonzero",
        "none",
        None,
        VER38 + b"\x01" + b"\xff",
        VER38 + b"\x01\x01" + OK,
        (done(True, (3, 8)),),
    ),
]

FAILURES = [
    Vector(
        "3.8-vnc-reject",
        "vnc",
        None,
        VER38 + b"\x02" + WRONG_RESPONSE,
        VER38 + b"\x01\x02" + QEMU_CHALLENGE + FAILED + reason(b"Authentication failed"),
        (AUTH_WRONG, REJECTED),
    ),
    Vector(
        "3.7-vnc-reject",
        "vnc",
        None,
        VER37 + b"\x02" + WRONG_RESPONSE,
        VER38 + b"\x01\x02" + QEMU_CHALLENGE + FAILED,
        (AUTH_WRONG, REJECTED),
    ),
    Vector(
        "3.3-vnc-reject",
        "vnc",
        None,
        VER33 + WRONG_RESPONSE,
        VER38 + b"\x00\x00\x00\x02" + QEMU_CHALLENGE + FAILED,
        (AUTH_WRONG, REJECTED),
    ),
    Vector(
        "3.8-refuse",
        "none",
        "instance is not running",
        VER38,
        VER38 + b"\x00" + reason(b"instance is not running"),
        (HandshakeFailed("instance is not running"),),
    ),
    Vector(
        "3.7-refuse",
        "vnc",
        "instance is not running",
        VER37,
        VER38 + b"\x00" + reason(b"instance is not running"),
        (HandshakeFailed("instance is not running"),),
    ),
    Vector(
        "3.3-refuse",
        "none",
        "instance is not running",
        VER33,
        VER38 + b"\x00\x00\x00\x00" + reason(b"instance is not running"),
        (HandshakeFailed("instance is not running"),),
    ),
    Vector(
        "refuse-utf8",
        "none",
        "Instanz läuft nicht",
        VER38,
        VER38 + b"\x00" + reason("Instanz läuft nicht".encode()),
        (HandshakeFailed("Instanz läuft nicht"),),
    ),
    Vector(
        "3.8-wrong-choice",
        "none",
        None,
        VER38 + b"\x02",
        VER38 + b"\x01\x01" + FAILED + reason(b"unsupported security type"),
        (HandshakeFailed("viewer chose unsupported security type 2"),),
    ),
    Vector(
        "3.8-wrong-choice-vnc",
        "vnc",
        None,
        VER38 + b"\x01",
        VER38 + b"\x01\x02" + FAILED + reason(b"unsupported security type"),
        (HandshakeFailed("viewer chose unsupported security type 1"),),
    ),
    Vector(
        "3.8-choice-vencrypt",
        "none",
        None,
        VER38 + b"\x13",
        VER38 + b"\x01\x01" + FAILED + reason(b"unsupported security type"),
        (HandshakeFailed("viewer chose unsupported security type 19"),),
    ),
    Vector(
        "3.7-wrong-choice",
        "none",
        None,
        VER37 + b"\x00",
        VER38 + b"\x01\x01",
        (HandshakeFailed("viewer chose unsupported security type 0"),),
    ),
    Vector(
        "major-version-2",
        "none",
        None,
        b"RFB 002.002\n",
        VER38,
        (HandshakeFailed("protocol error: unsupported RFB protocol version 2.2"),),
    ),
]

VECTORS = SUCCESS + FAILURES
TERMINAL = (ClientInitReceived, HandshakeFailed)


def feed(machine, chunks):
    """
    Feed chunks, letting the glue decide on AuthResponse events.

    @return: C{(events, sent, positions)}; C{positions[i]} is the index of
        the chunk that produced C{events[i]}.
    """
    events, positions = [], []
    sent = machine.data_to_send()
    for i, chunk in enumerate(chunks):
        new = machine.receive_data(chunk)
        for event in new:
            events.append(event)
            positions.append(i)
            if isinstance(event, AuthResponse):
                decided = glue_decide(machine, event)
                events += decided
                positions += [i] * len(decided)
        sent += machine.data_to_send()
    return events, sent, positions


def check_final_state(machine, events):
    if isinstance(events[-1], HandshakeFailed):
        assert machine.state is DownstreamState.FAILED
    else:
        assert machine.state is DownstreamState.DONE


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_whole(vector):
    """Fed in one piece, each transcript yields exactly its events and the server bytes."""
    machine = new_machine(vector.auth, vector.refuse)
    events, sent, _ = feed(machine, [vector.client])
    assert tuple(events) == vector.events
    assert sent == vector.server
    check_final_state(machine, events)


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_one_byte_at_a_time(vector):
    """Fed byte by byte, the final event comes with the last byte and the result is the same."""
    machine = new_machine(vector.auth, vector.refuse)
    chunks = [bytes([b]) for b in vector.client]
    events, sent, positions = feed(machine, chunks)
    assert tuple(events) == vector.events
    assert sent == vector.server
    last = len(chunks) - 1
    for event, position in zip(events, positions):
        if isinstance(event, AuthResponse):
            # The response is the last 16 bytes before (optional) ClientInit.
            assert position in (last, last - 1)
        else:
            assert position == last
    check_final_state(machine, events)


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_random_splits(vector):
    """Fed in arbitrary pieces, each transcript yields the same events and bytes."""

    # A nested @given: pytest-twisted breaks @given combined with parametrize.
    @given(cuts=st.lists(st.integers(0, len(vector.client))))
    def check(cuts):
        machine = new_machine(vector.auth, vector.refuse)
        events, sent, _ = feed(machine, split(vector.client, cuts))
        assert tuple(events) == vector.events
        assert sent == vector.server

    check()


@pytest.mark.parametrize("vector", SUCCESS, ids=str)
def test_trailing_data_is_leftover(vector):
    """Bytes after ClientInit come back untouched as leftover."""
    machine = new_machine(vector.auth)
    events, sent, _ = feed(machine, [vector.client + SET_ENCODINGS])
    final = vector.events[-1]
    assert events[-1] == ClientInitReceived(final.shared, final.version, SET_ENCODINGS)
    assert sent == vector.server


@pytest.mark.parametrize("vector", SUCCESS, ids=str)
def test_trailing_data_random_splits(vector):
    """Whatever the split, leftover plus the later chunks is exactly the trailing data."""
    stream = vector.client + SET_ENCODINGS

    @given(cuts=st.lists(st.integers(0, len(stream))))
    def check(cuts):
        chunks = split(stream, cuts)
        machine = new_machine(vector.auth)
        events, sent, positions = feed(machine, chunks)
        final = events[-1]
        assert isinstance(final, ClientInitReceived)
        assert final.leftover + b"".join(chunks[positions[-1] + 1 :]) == SET_ENCODINGS
        assert sent == vector.server

    check()


def test_accept_processes_buffered_bytes():
    """Bytes that arrive while the decision is pending are handled by accept()."""
    machine = new_machine("vnc")
    events = machine.receive_data(VER38 + b"\x02" + RESPONSE + b"\x01" + SET_ENCODINGS)
    assert events == [AUTH_OK]
    assert machine.state is DownstreamState.AWAIT_AUTH_DECISION
    assert machine.accept() == [ClientInitReceived(True, (3, 8), SET_ENCODINGS)]
    assert machine.data_to_send().endswith(QEMU_CHALLENGE + OK)


def test_client_init_after_accept():
    """With nothing buffered, accept() returns no events and ClientInit comes via receive_data."""
    machine = new_machine("vnc")
    assert machine.receive_data(VER38 + b"\x02" + RESPONSE) == [AUTH_OK]
    assert machine.accept() == []
    assert machine.state is DownstreamState.AWAIT_CLIENT_INIT
    assert machine.receive_data(b"\x01") == [ClientInitReceived(True, (3, 8), b"")]


def test_reject_discards_buffered_bytes():
    """reject() fails the handshake; ClientInit that arrived meanwhile is never reported."""
    machine = new_machine("vnc")
    machine.receive_data(VER38 + b"\x02" + WRONG_RESPONSE + b"\x01")
    assert machine.reject("no") == [HandshakeFailed("no")]
    assert machine.receive_data(b"\x01") == []
    assert machine.state is DownstreamState.FAILED


def test_buffer_cap_while_awaiting_decision():
    """More than 64 KiB buffered while the decision is pending fails the handshake."""
    machine = new_machine("vnc")
    machine.receive_data(VER38 + b"\x02" + RESPONSE)
    assert machine.receive_data(b"\x01" * 65536) == []
    [event] = machine.receive_data(b"\x01")
    assert isinstance(event, HandshakeFailed)
    assert "65536 bytes" in event.reason
    assert machine.state is DownstreamState.FAILED
    assert machine.accept() == []
    assert machine.reject("late") == []


def test_exactly_64_kib_buffered_is_allowed():
    """Exactly 64 KiB buffered during the decision is still within the cap."""
    machine = new_machine("vnc")
    machine.receive_data(VER38 + b"\x02" + RESPONSE)
    machine.receive_data(b"\x01" * 65536)
    [event] = machine.accept()
    assert event == ClientInitReceived(True, (3, 8), b"\x01" * 65535)


def test_data_before_initiate_fails():
    """A viewer speaking before the server greeting fails the handshake."""
    machine = DownstreamHandshake()
    assert machine.state is DownstreamState.INITIAL
    [event] = machine.receive_data(VER38)
    assert isinstance(event, HandshakeFailed)
    assert machine.state is DownstreamState.FAILED
    assert machine.data_to_send() == b""


def test_initiate_sends_version():
    """initiate() queues the 3.8 ProtocolVersion and waits for the viewer's version."""
    machine = DownstreamHandshake()
    assert machine.receive_data(b"") == []
    machine.initiate()
    assert machine.data_to_send() == VER38
    assert machine.state is DownstreamState.AWAIT_VERSION


def test_initiate_twice_is_an_error():
    """Calling initiate() twice is a programming error."""
    machine = new_machine()
    with pytest.raises(RuntimeError):
        machine.initiate()


@pytest.mark.parametrize("auth", ["none", "vnc"])
def test_decision_without_auth_response_is_an_error(auth):
    """accept() or reject() without a pending AuthResponse is a programming error."""
    machine = new_machine(auth)
    machine.receive_data(VER38)
    with pytest.raises(RuntimeError):
        machine.accept()
    with pytest.raises(RuntimeError):
        machine.reject("no")


def test_unknown_auth_mode():
    """An auth mode other than "none" or "vnc" is refused at construction."""
    with pytest.raises(ValueError):
        DownstreamHandshake(auth="tls")


def test_bad_random_source():
    """A random source returning the wrong length is refused at construction."""
    with pytest.raises(ValueError):
        DownstreamHandshake(auth="vnc", randbytes=lambda n: b"\0" * 8)


def test_default_challenges_are_fresh():
    """Each machine draws its own random challenge."""
    challenges = []
    for _ in range(2):
        machine = DownstreamHandshake(auth="vnc")
        machine.initiate()
        machine.receive_data(VER38 + b"\x02")
        challenges.append(machine.data_to_send()[-16:])
        [event] = machine.receive_data(RESPONSE)
        assert event.challenge == challenges[-1]
    assert challenges[0] != challenges[1]


def test_input_after_done_is_ignored():
    """After DONE the machine ignores input; the glue relays bytes itself."""
    machine = new_machine()
    machine.receive_data(VER38 + b"\x01\x01")
    assert machine.state is DownstreamState.DONE
    machine.data_to_send()
    assert machine.receive_data(SET_ENCODINGS) == []
    assert machine.data_to_send() == b""


JUNK_VERSIONS = [
    b"GET / HTTP/1.1\r\n",
    b"RFB 003.008\r",
    b"RFB 003.8\n\n\n",
    b"RFB 003-008\n",
    b"RFB\t003.008\n",
    b"RFB 00x.008\n",
    b"\xff" * 12,
    b"RFB 000.003\n",
]


@pytest.mark.parametrize("junk", JUNK_VERSIONS)
def test_junk_version(junk):
    """A malformed viewer version fails after 12 bytes and nothing more is sent."""
    machine = new_machine("vnc")
    assert machine.data_to_send() == VER38
    assert machine.receive_data(junk[:11]) == []
    [event] = machine.receive_data(junk[11:])
    assert isinstance(event, HandshakeFailed)
    assert "version" in event.reason
    assert machine.data_to_send() == b""


def check_outcome(machine, events):
    """
    The fuzz invariant: AuthResponse events aside, at most one terminal
    event, last, matching the state; none means still waiting.
    """
    terminal = [e for e in events if isinstance(e, TERMINAL)]
    assert len(terminal) <= 1
    assert all(isinstance(e, AuthResponse) for e in events[: len(events) - len(terminal)])
    if not terminal:
        assert machine.state not in (DownstreamState.DONE, DownstreamState.FAILED)
    elif isinstance(terminal[0], HandshakeFailed):
        assert machine.state is DownstreamState.FAILED
    else:
        assert machine.state is DownstreamState.DONE


@given(
    auth=st.sampled_from(["none", "vnc"]),
    refuse=st.sampled_from([None, "refused"]),
    initiate=st.booleans(),
    stream=st.binary(max_size=300),
    data=st.data(),
)
def test_fuzz_arbitrary_bytes(auth, refuse, initiate, stream, data):
    """Arbitrary bytes in arbitrary chunks never raise and end in one valid outcome."""
    machine = DownstreamHandshake(auth=auth, refuse=refuse)
    if initiate:
        machine.initiate()
    chunks = split(stream, data.draw(st.lists(st.integers(0, len(stream)))))
    events = []
    for chunk in chunks:
        for event in machine.receive_data(chunk):
            events.append(event)
            if isinstance(event, AuthResponse):
                if data.draw(st.booleans()):
                    events += machine.accept()
                else:
                    events += machine.reject("no")
        machine.data_to_send()
    check_outcome(machine, events)


@given(vector=st.sampled_from(VECTORS), data=st.data(), tail=st.binary(max_size=100))
def test_fuzz_valid_prefix_then_garbage(vector, data, tail):
    """A valid transcript prefix followed by garbage never raises and ends in one valid outcome."""
    cut = data.draw(st.integers(0, len(vector.client)))
    stream = vector.client[:cut] + tail
    machine = new_machine(vector.auth, vector.refuse)
    chunks = split(stream, data.draw(st.lists(st.integers(0, len(stream)))))
    events, _, _ = feed(machine, chunks)
    check_outcome(machine, events)


# -- hold: the decision comes after the greeting (a token viewer waiting for QEMU) ---------------

_OFFERS = {VER33: b"\x00\x00\x00\x01", VER37: b"\x01\x01", VER38: b"\x01\x01"}
_REFUSALS = {VER33: b"\x00\x00\x00\x00", VER37: b"\x00", VER38: b"\x00"}


@pytest.mark.parametrize("version", [VER33, VER37, VER38])
@pytest.mark.parametrize("decided_early", [False, True])
def test_held_viewer_is_offered_security_only_once_accepted(version, decided_early):
    machine = DownstreamHandshake(hold=True)
    machine.initiate()
    assert machine.data_to_send() == VER38 and machine.decision_pending
    if decided_early:
        assert machine.accept() == []
        assert not machine.decision_pending
    assert machine.receive_data(version) == []
    if not decided_early:
        assert machine.data_to_send() == b"" and machine.decision_pending
        assert machine.accept() == []
    assert machine.data_to_send() == _OFFERS[version]
    rest = b"" if version == VER33 else b"\x01"
    events = machine.receive_data(rest + b"\x01")
    assert [type(e) for e in events] == [ClientInitReceived]


@pytest.mark.parametrize("version", [VER33, VER37, VER38])
@pytest.mark.parametrize("decided_early", [False, True])
def test_held_viewer_is_refused_with_the_reason_after_its_version(version, decided_early):
    machine = DownstreamHandshake(hold=True)
    machine.initiate()
    machine.data_to_send()
    if decided_early:
        assert machine.reject("instance is not running") == []
        assert not machine.decision_pending
        events = machine.receive_data(version)
    else:
        assert machine.receive_data(version) == []
        events = machine.reject("instance is not running")
    assert events == [HandshakeFailed("instance is not running")]
    assert machine.data_to_send() == _REFUSALS[version] + reason(b"instance is not running")
    assert not machine.decision_pending


def test_a_held_viewer_that_sends_garbage_fails_and_awaits_no_decision():
    machine = DownstreamHandshake(hold=True)
    machine.initiate()
    events = machine.receive_data(b"GET / HTTP/1.1\r\n")
    assert [type(e) for e in events] == [HandshakeFailed]
    assert not machine.decision_pending
    assert machine.accept() == []
