"""
Tests for the VeNCrypt (security type 19) part of
L{vncproxy.rfb.upstream.UpstreamHandshake}.  Server bytes are those QEMU 7.2
sent in the testbed (docs/qemu-facts.md, "VNC with TLS (VeNCrypt)"): version 0.2, one
subtype (X509Vnc with a password, X509None without), accept byte 1, then TLS.

A transcript has a part in the clear (up to the accept byte) and a part
inside TLS (the challenge, SecurityResult); the harness calls
C{tls_started()} when the machine emits L{StartTLS}, as the glue does.
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
    StartTLS,
    UpstreamHandshake,
    UpstreamState,
    VeNCryptSubtype,
)

VER37 = b"RFB 003.007\n"
VER38 = b"RFB 003.008\n"
CHALLENGE = bytes.fromhex("737da4e29ed60ba9a0324f57f08a4053")
PASSWORD = b"secret"
#: DES response for PASSWORD and CHALLENGE (see test_rfb_upstream).
RESPONSE = bytes.fromhex("a59937616d88bd5acc077686e8bcb3f1")
OK = b"\x00\x00\x00\x00"
FAILED = b"\x00\x00\x00\x01"
SERVER_INIT = bytes.fromhex("02d00190" "2018000100ff00ff00ff100800000000" "0000000a") + b"QEMU (tb1)"

#: S: only VeNCrypt; VeNCrypt 0.2; version ok.
OFFER = VER38 + b"\x01\x13" + b"\x00\x02" + b"\x00"
#: C: 3.8; VeNCrypt; 0.2.
ANSWER = VER38 + b"\x13" + b"\x00\x02"


def subtypes(*numbers):
    return bytes([len(numbers)]) + b"".join(struct.pack("!I", n) for n in numbers)


def u32(n):
    return struct.pack("!I", n)


def reason(text):
    return struct.pack("!I", len(text)) + text


@dataclass(frozen=True)
class Vector:
    name: str
    password: bytes | None
    tls: str | None
    clear: bytes  # server bytes before TLS
    inside: bytes  # server bytes inside TLS
    client_clear: bytes
    client_inside: bytes
    events: tuple

    def __str__(self):
        return self.name


def start(subtype):
    return StartTLS(subtype)


X509VNC, X509NONE = VeNCryptSubtype.X509VNC, VeNCryptSubtype.X509NONE
TLSVNC, TLSNONE = VeNCryptSubtype.TLSVNC, VeNCryptSubtype.TLSNONE

SUCCESS = [
    Vector("qemu-x509vnc", PASSWORD, "x509",
           OFFER + subtypes(261) + b"\x01", CHALLENGE + OK,
           ANSWER + u32(261), RESPONSE,
           (start(X509VNC), SecurityAccepted((3, 8), b""))),
    Vector("qemu-x509none", None, "x509",
           OFFER + subtypes(260) + b"\x01", OK,
           ANSWER + u32(260), b"",
           (start(X509NONE), SecurityAccepted((3, 8), b""))),
    Vector("x509none-preferred", PASSWORD, "x509",
           OFFER + subtypes(261, 260, 257) + b"\x01", OK,
           ANSWER + u32(260), b"",
           (start(X509NONE), SecurityAccepted((3, 8), b""))),
    Vector("x509vnc-among-others", PASSWORD, "x509",
           OFFER + subtypes(256, 258, 261, 262) + b"\x01", CHALLENGE + OK,
           ANSWER + u32(261), RESPONSE,
           (start(X509VNC), SecurityAccepted((3, 8), b""))),
    Vector("anonymous-tlsvnc", PASSWORD, "anonymous",
           OFFER + subtypes(258) + b"\x01", CHALLENGE + OK,
           ANSWER + u32(258), RESPONSE,
           (start(TLSVNC), SecurityAccepted((3, 8), b""))),
    Vector("anonymous-tlsnone", None, "anonymous",
           OFFER + subtypes(258, 257) + b"\x01", OK,
           ANSWER + u32(257), b"",
           (start(TLSNONE), SecurityAccepted((3, 8), b""))),
    Vector("3.7-x509none-has-security-result", None, "x509",
           VER37 + b"\x01\x13\x00\x02\x00" + subtypes(260) + b"\x01", OK,
           VER37 + b"\x13\x00\x02" + u32(260), b"",
           (start(X509NONE), SecurityAccepted((3, 7), b""))),
    Vector("vencrypt-preferred-over-none", None, "x509",
           VER38 + b"\x02\x01\x13\x00\x02\x00" + subtypes(260) + b"\x01", OK,
           VER38 + b"\x13\x00\x02" + u32(260), b"",
           (start(X509NONE), SecurityAccepted((3, 8), b""))),
    Vector("newer-vencrypt-version-answered-with-0.2", None, "x509",
           VER38 + b"\x01\x13\x00\x03\x00" + subtypes(260) + b"\x01", OK,
           ANSWER + u32(260), b"",
           (start(X509NONE), SecurityAccepted((3, 8), b""))),
]

FAILURES_INSIDE = [
    Vector("x509vnc-wrong-password", PASSWORD, "x509",
           OFFER + subtypes(261) + b"\x01", CHALLENGE + FAILED + reason(b"Authentication failed\0"),
           ANSWER + u32(261), RESPONSE,
           (start(X509VNC), HandshakeFailed("VNC authentication failed: Authentication failed"))),
    Vector("3.7-x509vnc-wrong-password", PASSWORD, "x509",
           VER37 + b"\x01\x13\x00\x02\x00" + subtypes(261) + b"\x01", CHALLENGE + FAILED,
           VER37 + b"\x13\x00\x02" + u32(261), RESPONSE,
           (start(X509VNC), HandshakeFailed("VNC authentication failed"))),
]

FAILURES_CLEAR = [
    Vector("vencrypt-without-tls-configured", PASSWORD, None,
           VER38 + b"\x01\x13", b"", VER38, b"",
           (HandshakeFailed("VNC server requires TLS (VeNCrypt) but no CA is configured "
                            "([vnc] tls_ca) (offered: 19 (VENCRYPT))"),)),
    Vector("vencrypt-0.1-refused", PASSWORD, "x509",
           VER38 + b"\x01\x13\x00\x01", b"", VER38 + b"\x13", b"",
           (HandshakeFailed("VNC server speaks VeNCrypt 0.1; 0.2 is required"),)),
    Vector("version-not-acknowledged", PASSWORD, "x509",
           OFFER[:-1] + b"\x01", b"", ANSWER, b"",
           (HandshakeFailed("VNC server refused VeNCrypt version 0.2"),)),
    Vector("only-anonymous-offered-to-x509", PASSWORD, "x509",
           OFFER + subtypes(257, 258), b"", ANSWER, b"",
           (HandshakeFailed("VNC server offers no usable VeNCrypt subtype: need X509None or "
                            "X509Vnc (certificate-verified TLS) (offered: 257 (TLSNONE), "
                            "258 (TLSVNC))"),)),
    Vector("only-x509-offered-to-anonymous", PASSWORD, "anonymous",
           OFFER + subtypes(260, 261), b"", ANSWER, b"",
           (HandshakeFailed("VNC server offers no usable VeNCrypt subtype: need TLSNone or "
                            "TLSVnc (anonymous TLS) (offered: 260 (X509NONE), 261 (X509VNC))"),)),
    Vector("plain-and-sasl-only", PASSWORD, "x509",
           OFFER + subtypes(256, 262, 263, 999), b"", ANSWER, b"",
           (HandshakeFailed("VNC server offers no usable VeNCrypt subtype: need X509None or "
                            "X509Vnc (certificate-verified TLS) (offered: 256 (PLAIN), "
                            "262 (X509PLAIN), 263 (X509SASL), 999)"),)),
    Vector("no-subtypes", PASSWORD, "x509",
           OFFER + subtypes(), b"", ANSWER, b"",
           (HandshakeFailed("VNC server offers no usable VeNCrypt subtype: need X509None or "
                            "X509Vnc (certificate-verified TLS) (offered: none)"),)),
    Vector("x509vnc-without-password", None, "x509",
           OFFER + subtypes(261), b"", ANSWER, b"",
           (HandshakeFailed("VNC server requires a password but none is configured"),)),
    Vector("subtype-rejected", PASSWORD, "x509",
           OFFER + subtypes(261) + b"\x00", b"", ANSWER + u32(261), b"",
           (HandshakeFailed("VNC server rejected VeNCrypt subtype 261 (X509VNC)"),)),
]

VER33 = b"RFB 003.003\n"


def required(offered):
    return (HandshakeFailed("VNC server does not offer VeNCrypt with X.509 but a CA is "
                            "configured ([vnc] tls_ca): refusing to connect in the clear "
                            f"(offered: {offered})"),)


#: Downgrades: with a CA configured, a server (or anyone on the path) offering only None or
#: VNC Authentication is refused before we answer; the challenge is never answered.
DOWNGRADES = [
    Vector("x509-server-offers-only-none", PASSWORD, "x509",
           VER38 + b"\x01\x01", b"", VER38, b"", required("1 (NONE)")),
    Vector("x509-server-offers-only-vnc-auth", PASSWORD, "x509",
           VER38 + b"\x01\x02" + CHALLENGE, b"", VER38, b"", required("2 (VNC_AUTH)")),
    Vector("x509-server-offers-none-and-vnc-auth", PASSWORD, "x509",
           VER37 + b"\x02\x01\x02", b"", VER37, b"", required("1 (NONE), 2 (VNC_AUTH)")),
    Vector("x509-3.3-server-chooses-vnc-auth", PASSWORD, "x509",
           VER33 + u32(2) + CHALLENGE, b"", VER33, b"", required("2 (VNC_AUTH)")),
    Vector("x509-3.3-server-chooses-none", PASSWORD, "x509",
           VER33 + u32(1), b"", VER33, b"", required("1 (NONE)")),
]

VECTORS = SUCCESS + FAILURES_INSIDE + FAILURES_CLEAR + DOWNGRADES


def run(vector, clear_chunks, inside_chunks):
    """
    Drive a machine like the glue: clear chunks until StartTLS, then
    C{tls_started()}, then the chunks received inside TLS.

    @return: C{(machine, events, sent_clear, sent_inside)}.
    """
    machine = UpstreamHandshake(vector.password, tls=vector.tls)
    events, clear, inside = [], b"", b""
    tls = False
    for chunk in clear_chunks:
        new = machine.receive_data(chunk)
        clear += machine.data_to_send()
        events += new
        if any(isinstance(e, StartTLS) for e in new):
            events += machine.tls_started()
            tls = True
    if tls:
        inside += machine.data_to_send()
        for chunk in inside_chunks:
            events += machine.receive_data(chunk)
            inside += machine.data_to_send()
    return machine, events, clear, inside


def check(vector, machine, events, clear, inside):
    assert events == list(vector.events)
    assert clear == vector.client_clear
    assert inside == vector.client_inside
    if isinstance(vector.events[-1], HandshakeFailed):
        assert machine.state is UpstreamState.FAILED
    else:
        assert machine.state is UpstreamState.DONE


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_whole(vector):
    """Each part fed in one piece yields exactly the transcript's events and client bytes."""
    check(vector, *run(vector, [vector.clear], [vector.inside]))


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_one_byte_at_a_time(vector):
    """Fed byte by byte, the result is the same."""
    check(vector, *run(vector, [bytes([b]) for b in vector.clear],
                       [bytes([b]) for b in vector.inside]))


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_random_splits(vector):
    """Fed in arbitrary pieces, the result is the same."""

    @given(cuts=st.lists(st.integers(0, len(vector.clear))),
           inside_cuts=st.lists(st.integers(0, len(vector.inside))))
    def check_split(cuts, inside_cuts):
        check(vector, *run(vector, split(vector.clear, cuts), split(vector.inside, inside_cuts)))

    check_split()


@pytest.mark.parametrize("vector", SUCCESS, ids=str)
def test_server_init_after_tls_is_leftover(vector):
    """ServerInit arriving with the SecurityResult comes back untouched as leftover."""
    _, events, _, _ = run(vector, [vector.clear], [vector.inside + SERVER_INIT])
    assert events[-1] == SecurityAccepted(events[-1].version, SERVER_INIT)


def test_start_tls_names_the_kind_of_verification():
    """StartTLS tells the glue whether the subtype is certificate-verified or anonymous."""
    assert not StartTLS(X509VNC).anonymous and not StartTLS(X509NONE).anonymous
    assert StartTLS(TLSVNC).anonymous and StartTLS(TLSNONE).anonymous


def test_nothing_is_sent_in_the_clear_after_start_tls():
    """Between StartTLS and tls_started() the machine queues nothing and waits."""
    machine = UpstreamHandshake(PASSWORD, tls="x509")
    events = machine.receive_data(OFFER + subtypes(261) + b"\x01")
    assert events == [StartTLS(X509VNC)]
    assert machine.data_to_send() == ANSWER + u32(261)
    assert machine.state is UpstreamState.AWAIT_TLS
    assert machine.data_to_send() == b""


def test_clear_data_with_the_accept_byte_fails_without_starting_tls():
    """Bytes in the same read as the accept byte are cleartext the server must not send."""
    machine = UpstreamHandshake(PASSWORD, tls="x509")
    [event] = machine.receive_data(OFFER + subtypes(261) + b"\x01" + CHALLENGE)
    assert event == HandshakeFailed("protocol error: VNC server sent data in the clear before TLS")
    assert machine.state is UpstreamState.FAILED


def test_clear_data_while_tls_pending_fails():
    """Bytes fed before tls_started() (the server talking in the clear) fail the handshake."""
    machine = UpstreamHandshake(PASSWORD, tls="x509")
    machine.receive_data(OFFER + subtypes(261) + b"\x01")
    [event] = machine.receive_data(CHALLENGE)
    assert event == HandshakeFailed("protocol error: VNC server sent data in the clear before TLS")
    assert machine.tls_started() == []


def test_tls_started_without_start_tls_is_an_error():
    """tls_started() is only valid right after StartTLS."""
    machine = UpstreamHandshake(PASSWORD, tls="x509")
    with pytest.raises(RuntimeError):
        machine.tls_started()
    machine.receive_data(VER38)
    with pytest.raises(RuntimeError):
        machine.tls_started()


def test_unknown_tls_mode():
    """Only None, "x509" and "anonymous" are TLS modes."""
    with pytest.raises(ValueError):
        UpstreamHandshake(PASSWORD, tls="plain")


def test_3_3_server_choosing_vencrypt_fails():
    """VeNCrypt needs a security type list; a 3.3 server choosing it is refused."""
    machine = UpstreamHandshake(PASSWORD, tls="x509")
    [event] = machine.receive_data(b"RFB 003.003\n" + u32(19))
    assert event == HandshakeFailed("VNC server chose unsupported security type 19")


def test_oversized_subtype_list_waits_then_completes():
    """A list of 255 subtypes (1021 bytes) is read whole before choosing."""
    many = subtypes(*range(1000, 1254), 260)
    machine = UpstreamHandshake(None, tls="x509")
    assert machine.receive_data(OFFER + many[:-1]) == []
    assert machine.receive_data(many[-1:] + b"\x01") == [StartTLS(X509NONE)]


def check_outcome(machine, events):
    """At most one terminal event, last; StartTLS at most once, before it."""
    terminal = [e for e in events if isinstance(e, (HandshakeFailed, SecurityAccepted))]
    starts = [e for e in events if isinstance(e, StartTLS)]
    assert len(terminal) <= 1 and len(starts) <= 1
    assert len(events) == len(terminal) + len(starts)
    if terminal:
        assert events[-1] is terminal[0]
        expected = UpstreamState.FAILED if isinstance(terminal[0], HandshakeFailed) else UpstreamState.DONE
        assert machine.state is expected
        if isinstance(terminal[0], HandshakeFailed):
            assert "hunter2" not in terminal[0].reason
    else:
        assert machine.state not in (UpstreamState.DONE, UpstreamState.FAILED)


@given(vector=st.sampled_from(VECTORS), data=st.data(), tail=st.binary(max_size=100),
       in_tls=st.booleans())
def test_fuzz_valid_prefix_then_garbage(vector, data, tail, in_tls):
    """A valid prefix (in the clear or inside TLS) then junk never raises and ends validly."""
    if in_tls:
        clear = vector.clear
        cut = data.draw(st.integers(0, len(vector.inside)))
        inside = vector.inside[:cut] + tail
    else:
        cut = data.draw(st.integers(0, len(vector.clear)))
        clear, inside = vector.clear[:cut] + tail, b""
    password = b"hunter2" if vector.password else None
    machine = UpstreamHandshake(password, tls=vector.tls)
    events = []
    for chunk in split(clear, data.draw(st.lists(st.integers(0, len(clear))))):
        new = machine.receive_data(chunk)
        events += new
        if any(isinstance(e, StartTLS) for e in new):
            events += machine.tls_started()
    if machine.state not in (UpstreamState.DONE, UpstreamState.FAILED):
        for chunk in split(inside, data.draw(st.lists(st.integers(0, len(inside))))):
            events += machine.receive_data(chunk)
    check_outcome(machine, events)


@given(stream=st.binary(max_size=200), data=st.data(), tls=st.sampled_from(["x509", "anonymous"]))
def test_fuzz_after_vencrypt_offer(stream, data, tls):
    """Arbitrary bytes after the VeNCrypt offer never raise and end in one valid outcome."""
    machine = UpstreamHandshake(b"hunter2", tls=tls)
    events = machine.receive_data(VER38 + b"\x01\x13")
    for chunk in split(stream, data.draw(st.lists(st.integers(0, len(stream))))):
        new = machine.receive_data(chunk)
        events += new
        if any(isinstance(e, StartTLS) for e in new):
            events += machine.tls_started()
    check_outcome(machine, events)
