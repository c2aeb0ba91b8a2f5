"""
Property-based fuzzing of the sans-IO parsers: both RFB handshake machines and the xvpvnc
CONNECT parser get random bytes, mutated valid transcripts cut at random points, and (the
downstream machine) random sequences of the glue's calls. Only the documented outcomes may
happen: events of the documented types, one terminal event at most, a clean refusal, and
nothing accepted or sent after it. The invariants live in L{tests.fuzz.targets}, shared with
the atheris harnesses in fuzz/.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.fuzz import targets
from vncproxy.httpconnect import BadRequest, ConnectRequestParser
from vncproxy.rfb import (
    AuthResponse,
    ClientInitReceived,
    DownstreamHandshake,
    DownstreamState,
    HandshakeFailed,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Values that stress length fields and enums.
_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
                b"\x00\x00\x10\x01", b"\x00\x01\x00\x00", b"\r\n", b"\n", b" ", b"%", b"[", b"]", b"?", b"//", b":"]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6),
              st.binary(min_size=1, max_size=8) | st.sampled_from(_INTERESTING)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 8)),
    st.tuples(st.just("repeat"), st.integers(0, 10**6), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
)


def mutate(seed, mutations):
    """
    Apply C{mutations} to the stream part of a seed (bytes 2 on for the RFB targets, 1 on for
    CONNECT), keeping its config bytes.
    """
    data = bytearray(seed)
    for kind, position, arg in mutations:
        at = position % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= arg
        elif kind == "insert":
            data[at:at] = arg
        elif kind == "delete":
            del data[at:at + arg]
        elif kind == "repeat":
            data[at:at] = data[at:at + arg] * 3
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_random_bytes(name):
    """Random bytes with random configurations and cuts end in a documented outcome."""
    target = targets.TARGETS[name]

    @FUZZ
    @given(data=st.binary(max_size=400))
    def check(data):
        target(data)

    check()


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_mutated_transcripts(name):
    """Valid transcripts with flipped, inserted, deleted, repeated and cut bytes end in a documented outcome."""
    target = targets.TARGETS[name]

    @FUZZ
    @given(seed=st.sampled_from(targets.SEEDS[name]), mutations=st.lists(mutation, max_size=6),
           chunking=st.integers(0, 255))
    def check(seed, mutations, chunking):
        data = bytearray(mutate(seed, mutations))
        if data:
            data[min(1, len(data) - 1) if name.startswith("rfb") else 0] = chunking
        target(bytes(data))

    check()


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_seeds_complete(name):
    """Each seed transcript is itself a complete exchange (so mutations start from valid input)."""
    for seed in targets.SEEDS[name]:
        targets.TARGETS[name](seed)
    assert len(targets.SEEDS[name]) >= 3


def test_connect_huge_request_is_refused_early():
    """A CONNECT request dribbled past 8 KiB without a blank line is refused, not buffered."""
    parser = ConnectRequestParser()
    parser.receive_data(b"CONNECT /console?token=x HTTP/1.1\r\n")
    with pytest.raises(BadRequest):
        for _ in range(1000):
            parser.receive_data(b"X-Pad: " + b"a" * 64 + b"\r\n")


class DownstreamGlue(RuleBasedStateMachine):
    """
    Random interleavings of the glue's calls on a L{DownstreamHandshake}: bytes, initiate,
    accept, reject, data_to_send. Misuse raises the documented C{RuntimeError}; nothing else
    escapes, and a finished machine stays finished and silent.
    """

    def __init__(self):
        super().__init__()
        self.machine = DownstreamHandshake(auth="vnc", randbytes=lambda n: b"\x11" * n)
        self.terminal = []
        self.pending = False

    def _events(self, events):
        for event in events:
            assert isinstance(event, (AuthResponse, HandshakeFailed, ClientInitReceived))
            if isinstance(event, AuthResponse):
                assert not self.terminal
                self.pending = True
            else:
                self.terminal.append(event)

    @rule()
    def initiate(self):
        if self.machine.state is DownstreamState.INITIAL:
            self.machine.initiate()
        else:
            with pytest.raises(RuntimeError):
                self.machine.initiate()

    @rule(data=st.binary(max_size=30) | st.sampled_from(
        [b"RFB 003.008\n", b"RFB 003.003\n", b"\x02", b"\x01", b"\x00" * 16]))
    def receive(self, data):
        self._events(self.machine.receive_data(data))

    @rule(accept=st.booleans())
    def decide(self, accept):
        state = self.machine.state
        if state is DownstreamState.AWAIT_AUTH_DECISION:
            self.pending = False
            self._events(self.machine.accept() if accept else self.machine.reject("no"))
        elif state is DownstreamState.FAILED:
            assert (self.machine.accept() if accept else self.machine.reject("no")) == []
        else:
            with pytest.raises(RuntimeError):
                self.machine.accept() if accept else self.machine.reject("no")

    @precondition(lambda self: self.terminal)
    @rule(data=st.binary(min_size=1, max_size=30))
    def after_the_end(self, data):
        self.machine.data_to_send()
        assert self.machine.receive_data(data) == []
        assert self.machine.data_to_send() == b""

    @invariant()
    def one_terminal_event(self):
        assert len(self.terminal) <= 1
        if self.terminal:
            expected = (DownstreamState.FAILED if isinstance(self.terminal[0], HandshakeFailed)
                        else DownstreamState.DONE)
            assert self.machine.state is expected


TestDownstreamGlue = DownstreamGlue.TestCase
TestDownstreamGlue.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
