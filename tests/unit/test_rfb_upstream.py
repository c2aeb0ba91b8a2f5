"""
Tests for L{vncproxy.rfb.upstream.UpstreamHandshake}, the RFB client the
proxy runs toward QEMU.  Server bytes are those QEMU 7.2 sent in the testbed
(docs/qemu-facts.md, "Raw RFB bytes QEMU 7.2 sends").
"""

import struct
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.chunks import split
from vncproxy.rfb import (
    HandshakeFailed,
    SecurityAccepted,
    UpstreamHandshake,
    UpstreamState,
    client_init,
)

VER33 = b"RFB 003.003\n"
VER37 = b"RFB 003.007\n"
VER38 = b"RFB 003.008\n"
QEMU_CHALLENGE = bytes.fromhex("737da4e29ed60ba9a0324f57f08a4053")
PASSWORD = b"secret"
#: DES response for PASSWORD and QEMU_CHALLENGE, computed with OpenSSL.
RESPONSE = bytes.fromhex("a59937616d88bd5acc077686e8bcb3f1")
OK = b"\x00\x00\x00\x00"
FAILED = b"\x00\x00\x00\x01"
#: QEMU's failed SecurityResult in 3.8, with its trailing NUL.
QEMU_AUTH_FAILED = FAILED + b"\x00\x00\x00\x16" + b"Authentication failed\0"
#: QEMU's ServerInit for the 720x400 testbed guest "tb1".
SERVER_INIT = bytes.fromhex(
    "02d00190" "2018000100ff00ff00ff100800000000" "0000000a"
) + b"QEMU (tb1)"


def reason(text: bytes) -> bytes:
    return struct.pack("!I", len(text)) + text


@dataclass(frozen=True)
class Vector:
    name: str
    password: bytes | None
    server: bytes
    client: bytes
    event: object

    def __str__(self):
        return self.name


def accepted(version):
    return SecurityAccepted(version, b"")


SUCCESS = [
    Vector("3.8-none", None, VER38 + b"\x01\x01" + OK, VER38 + b"\x01", accepted((3, 8))),
    Vector(
        "3.8-none-despite-password",
        PASSWORD,
        VER38 + b"\x01\x01" + OK,
        VER38 + b"\x01",
        accepted((3, 8)),
    ),
    Vector(
        "3.8-vnc",
        PASSWORD,
        VER38 + b"\x01\x02" + QEMU_CHALLENGE + OK,
        VER38 + b"\x02" + RESPONSE,
        accepted((3, 8)),
    ),
    Vector("3.7-none", None, VER37 + b"\x01\x01", VER37 + b"\x01", accepted((3, 7))),
    Vector(
        "3.7-vnc",
        PASSWORD,
        VER37 + b"\x01\x02" + QEMU_CHALLENGE + OK,
        VER37 + b"\x02" + RESPONSE,
        accepted((3, 7)),
    ),
    Vector("3.3-none", None, VER33 + b"\x00\x00\x00\x01", VER33, accepted((3, 3))),
    Vector(
        "3.3-vnc",
        PASSWORD,
        VER33 + b"\x00\x00\x00\x02" + QEMU_CHALLENGE + OK,
        VER33 + RESPONSE,
        accepted((3, 3)),
    ),
    Vector(
        "3.5-is-3.3",
        None,
        b"RFB 003.005\n" + b"\x00\x00\x00\x01",
        VER33,
        accepted((3, 3)),
    ),
    Vector(
        "apple-3.889-is-3.3",
        PASSWORD,
        b"RFB 003.889\n" + b"\x00\x00\x00\x02" + QEMU_CHALLENGE + OK,
        VER33 + RESPONSE,
        accepted((3, 3)),
    ),
    Vector(
        "3.10-is-3.8",
        None,
        b"RFB 003.010\n" + b"\x01\x01" + OK,
        VER38 + b"\x01",
        accepted((3, 8)),
    ),
    Vector(
        "4.1-is-3.8",
        None,
        b"RFB 004.001\n" + b"\x01\x01" + OK,
        VER38 + b"\x01",
        accepted((3, 8)),
    ),
    Vector(
        "prefers-none",
        PASSWORD,
        VER38 + b"\x03\x10\x02\x01" + OK,
        VER38 + b"\x01",
        accepted((3, 8)),
    ),
    Vector(
        "vnc-among-others",
        PASSWORD,
        VER38 + b"\x03\x10\x13\x02" + QEMU_CHALLENGE + OK,
        VER38 + b"\x02" + RESPONSE,
        accepted((3, 8)),
    ),
]

FAILURES = [
    Vector(
        "3.8-wrong-password",
        PASSWORD,
        VER38 + b"\x01\x02" + QEMU_CHALLENGE + QEMU_AUTH_FAILED,
        VER38 + b"\x02" + RESPONSE,
        HandshakeFailed("VNC authentication failed: Authentication failed"),
    ),
    Vector(
        "3.8-nonzero-result",
        PASSWORD,
        VER38 + b"\x01\x02" + QEMU_CHALLENGE + b"\x00\x00\x00\x02" + reason(b"Nope"),
        VER38 + b"\x02" + RESPONSE,
        HandshakeFailed("VNC authentication failed: Nope"),
    ),
    Vector(
        "3.8-none-failed",
        None,
        VER38 + b"\x01\x01" + FAILED + reason(b"Too busy"),
        VER38 + b"\x01",
        HandshakeFailed("VNC authentication failed: Too busy"),
    ),
    Vector(
        "3.7-wrong-password",
        PASSWORD,
        VER37 + b"\x01\x02" + QEMU_CHALLENGE + FAILED,
        VER37 + b"\x02" + RESPONSE,
        HandshakeFailed("VNC authentication failed"),
    ),
    Vector(
        "3.3-wrong-password",
        PASSWORD,
        VER33 + b"\x00\x00\x00\x02" + QEMU_CHALLENGE + FAILED,
        VER33 + RESPONSE,
        HandshakeFailed("VNC authentication failed"),
    ),
    Vector(
        "3.8-refused",
        None,
        VER38 + b"\x00" + reason(b"Too many security failures"),
        VER38,
        HandshakeFailed("VNC server refused the connection: Too many security failures"),
    ),
    Vector(
        "3.7-refused",
        None,
        VER37 + b"\x00" + reason(b"go away"),
        VER37,
        HandshakeFailed("VNC server refused the connection: go away"),
    ),
    Vector(
        "3.3-refused",
        None,
        VER33 + b"\x00\x00\x00\x00" + reason(b"go away"),
        VER33,
        HandshakeFailed("VNC server refused the connection: go away"),
    ),
    Vector(
        "refusal-reason-is-cleaned",
        None,
        VER38 + b"\x00" + reason(b" bad\x1b]0;x\x07\r\nnews\xff\xe2\x80\xae\0 "),
        VER38,
        HandshakeFailed("VNC server refused the connection: bad]0;xnews\ufffd"),
    ),
    Vector(
        "empty-refusal-reason",
        None,
        VER38 + b"\x00" + reason(b""),
        VER38,
        HandshakeFailed("VNC server refused the connection: (no reason given)"),
    ),
    Vector(
        "vnc-without-password",
        None,
        VER38 + b"\x01\x02",
        VER38,
        HandshakeFailed("VNC server requires a password but none is configured"),
    ),
    Vector(
        "3.3-vnc-without-password",
        None,
        VER33 + b"\x00\x00\x00\x02",
        VER33,
        HandshakeFailed("VNC server requires a password but none is configured"),
    ),
    Vector(
        "vencrypt-only",
        PASSWORD,
        VER38 + b"\x01\x13",
        VER38,
        HandshakeFailed(
            "VNC server requires TLS (VeNCrypt) but no CA is configured "
            "([vnc] tls_ca) (offered: 19 (VENCRYPT))"
        ),
    ),
    Vector(
        "unsupported-types",
        PASSWORD,
        VER38 + b"\x03\x10\x1e\x63",
        VER38,
        HandshakeFailed(
            "VNC server offers no supported security type "
            "(offered: 16 (TIGHT), 30 (ARD), 99)"
        ),
    ),
    Vector(
        "3.3-unsupported-type",
        PASSWORD,
        VER33 + b"\x00\x00\x00\x13",
        VER33,
        HandshakeFailed("VNC server chose unsupported security type 19"),
    ),
    Vector(
        "oversized-refusal-reason",
        None,
        VER38 + b"\x00" + struct.pack("!I", 4097),
        VER38,
        HandshakeFailed("protocol error: reason string of 4097 bytes exceeds 4096"),
    ),
    Vector(
        "oversized-failure-reason",
        None,
        VER38 + b"\x01\x01" + FAILED + b"\xff\xff\xff\xff",
        VER38 + b"\x01",
        HandshakeFailed("protocol error: reason string of 4294967295 bytes exceeds 4096"),
    ),
    Vector(
        "major-version-2",
        None,
        b"RFB 002.000\n",
        b"",
        HandshakeFailed("protocol error: unsupported RFB protocol version 2.0"),
    ),
]

VECTORS = SUCCESS + FAILURES


def feed(machine, chunks):
    """
    Feed chunks, collecting events and sent bytes.

    @return: C{(events, sent, index)} where C{index} is the chunk index that
        produced the first event (or C{None}).
    """
    events, sent, index = [], b"", None
    for i, chunk in enumerate(chunks):
        new = machine.receive_data(chunk)
        if new and index is None:
            index = i
        events += new
        sent += machine.data_to_send()
    return events, sent, index


def check_final_state(machine, event):
    if isinstance(event, HandshakeFailed):
        assert machine.state is UpstreamState.FAILED
    else:
        assert machine.state is UpstreamState.DONE


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_whole(vector):
    """Fed in one piece, each transcript yields exactly its event and the client bytes."""
    machine = UpstreamHandshake(vector.password)
    assert machine.receive_data(vector.server) == [vector.event]
    assert machine.data_to_send() == vector.client
    check_final_state(machine, vector.event)


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_one_byte_at_a_time(vector):
    """Fed byte by byte, nothing is emitted until the last byte, and the result is the same."""
    machine = UpstreamHandshake(vector.password)
    chunks = [bytes([b]) for b in vector.server]
    events, sent, index = feed(machine, chunks)
    assert events == [vector.event]
    assert index == len(chunks) - 1
    assert sent == vector.client
    check_final_state(machine, vector.event)


# pytest-twisted rewraps a @given test's inner function on every call, which
# breaks @given combined with parametrize; so each parametrized test runs its
# own nested @given function instead.


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_random_splits(vector):
    """Fed in arbitrary pieces, each transcript yields the same event and bytes."""

    @given(cuts=st.lists(st.integers(0, len(vector.server))))
    def check(cuts):
        machine = UpstreamHandshake(vector.password)
        events, sent, _ = feed(machine, split(vector.server, cuts))
        assert events == [vector.event]
        assert sent == vector.client

    check()


@pytest.mark.parametrize("vector", SUCCESS, ids=str)
def test_trailing_data_is_leftover(vector):
    """Bytes after the handshake come back untouched as leftover."""
    machine = UpstreamHandshake(vector.password)
    [event] = machine.receive_data(vector.server + SERVER_INIT)
    assert event == SecurityAccepted(vector.event.version, SERVER_INIT)
    assert machine.data_to_send() == vector.client


@pytest.mark.parametrize("vector", SUCCESS, ids=str)
def test_trailing_data_random_splits(vector):
    """Whatever the split, leftover plus the later chunks is exactly the trailing data."""
    stream = vector.server + SERVER_INIT

    @given(cuts=st.lists(st.integers(0, len(stream))))
    def check(cuts):
        chunks = split(stream, cuts)
        machine = UpstreamHandshake(vector.password)
        events, sent, index = feed(machine, chunks)
        [event] = events
        assert event.version == vector.event.version
        assert event.leftover + b"".join(chunks[index + 1 :]) == SERVER_INIT
        assert sent == vector.client

    check()


def test_input_after_done_is_ignored():
    """After DONE the machine ignores input; the glue relays bytes itself."""
    machine = UpstreamHandshake()
    machine.receive_data(VER38 + b"\x01\x01" + OK)
    assert machine.receive_data(SERVER_INIT) == []
    assert machine.state is UpstreamState.DONE


def test_input_after_failure_is_ignored():
    """After FAILED the machine returns no events and queues no bytes."""
    machine = UpstreamHandshake()
    [event] = machine.receive_data(b"HTTP/1.1 200\r\n")
    assert isinstance(event, HandshakeFailed)
    machine.data_to_send()
    assert machine.receive_data(VER38 + b"\x01\x01" + OK) == []
    assert machine.data_to_send() == b""
    assert machine.state is UpstreamState.FAILED


def test_reason_of_maximum_length_is_accepted():
    """A 4096-byte refusal reason is read in full, not treated as a protocol error."""
    machine = UpstreamHandshake()
    [event] = machine.receive_data(VER38 + b"\x00" + reason(b"x" * 4096))
    assert event == HandshakeFailed("VNC server refused the connection: " + "x" * 4096)


def test_client_init_is_shared():
    """The ClientInit the glue sends after SecurityAccepted asks for a shared session."""
    assert client_init(True) == b"\x01"
    assert client_init(False) == b"\x00"


def test_initial_state_sends_nothing():
    """Before the server speaks, the client has nothing to send."""
    machine = UpstreamHandshake(PASSWORD)
    assert machine.state is UpstreamState.AWAIT_VERSION
    assert machine.data_to_send() == b""
    assert machine.receive_data(b"") == []


JUNK_VERSIONS = [
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"HTTP/1.1 400 Bad Request\r\n",
    b"RFB 003.008\r",
    b"RFB 03.008\n\n",
    b"RFB 003,008\n",
    b"rfb 003.008\n",
    b"RFB 003.00a\n",
    b"RFB +03.008\n",
    b"RFB  03.008\n",
    b"RFB 003.008 ",
    b"\0" * 12,
    b"RFB 000.000\n",
    b"RFB 001.999\n",
]


@pytest.mark.parametrize("junk", JUNK_VERSIONS)
def test_junk_version(junk):
    """Anything but a well-formed version 3 or later fails after 12 bytes, sending nothing."""
    machine = UpstreamHandshake(PASSWORD)
    assert machine.receive_data(junk[:11]) == []
    [event] = machine.receive_data(junk[11:])
    assert isinstance(event, HandshakeFailed)
    assert "version" in event.reason
    assert machine.data_to_send() == b""
    assert machine.state is UpstreamState.FAILED


def check_outcome(machine, events):
    """
    The fuzz invariant: at most one terminal event, last, matching the state;
    no terminal event means the machine is still waiting for data.
    """
    terminal = [e for e in events if isinstance(e, (HandshakeFailed, SecurityAccepted))]
    assert len(events) == len(terminal) <= 1
    if not events:
        assert machine.state not in (UpstreamState.DONE, UpstreamState.FAILED)
    elif isinstance(events[0], HandshakeFailed):
        assert machine.state is UpstreamState.FAILED
        assert isinstance(events[0].reason, str)
        assert "hunter2" not in events[0].reason
    else:
        assert machine.state is UpstreamState.DONE


@given(
    password=st.one_of(st.none(), st.just(b"hunter2")),
    stream=st.binary(max_size=300),
    data=st.data(),
)
def test_fuzz_arbitrary_bytes(password, stream, data):
    """Arbitrary bytes in arbitrary chunks never raise and end in one valid outcome."""
    machine = UpstreamHandshake(password)
    chunks = split(stream, data.draw(st.lists(st.integers(0, len(stream)))))
    events, _, _ = feed(machine, chunks)
    check_outcome(machine, events)


@given(
    vector=st.sampled_from(VECTORS),
    data=st.data(),
    tail=st.binary(max_size=100),
)
def test_fuzz_valid_prefix_then_garbage(vector, data, tail):
    """A valid transcript prefix followed by garbage never raises and ends in one valid outcome."""
    cut = data.draw(st.integers(0, len(vector.server)))
    stream = vector.server[:cut] + tail
    machine = UpstreamHandshake(b"hunter2" if vector.password else None)
    chunks = split(stream, data.draw(st.lists(st.integers(0, len(stream)))))
    events, _, _ = feed(machine, chunks)
    check_outcome(machine, events)


@given(prefix=st.sampled_from([VER38 + b"\x00", VER38 + b"\x01\x01" + FAILED]),
       length=st.integers(0, 2**32 - 1))
def test_fuzz_reason_lengths(prefix, length):
    """Any reason length either waits for the text or fails at once when above 4096."""
    machine = UpstreamHandshake()
    events = machine.receive_data(prefix + struct.pack("!I", length))
    if length > 4096:
        assert events == [
            HandshakeFailed(f"protocol error: reason string of {length} bytes exceeds 4096")
        ]
    elif length == 0:
        assert len(events) == 1 and isinstance(events[0], HandshakeFailed)
    else:
        assert events == []
