"""
Property-based fuzzing of whole HTTP exchanges on the API and console listeners (raw bytes
through Twisted's channel and our sites, WebSocket upgrades included; see
L{tests.fuzz.http_targets}): random bytes and mutated valid requests get a contract status,
never a 500, an echoed secret, a logged failure or a session left behind.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import http_targets
from tests.fuzz.test_parsers_fuzz import mutate, mutation

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))

_WORDS = [b"@K", b"@T", b"\r\n", b"\r\n\r\n", b" ", b"/", b"?", b"%", b"%00", b"..", b":",
          b"Content-Length: 99999999\r\n", b"Transfer-Encoding: chunked\r\n", b"ffffffff\r\n",
          b"Upgrade: websocket\r\n", b"Origin: null\r\n", b"Cookie: token=@T; token=x\r\n",
          b"\x88\x80abcd", b"\x82\xff" + b"\x7f" * 8, b"\x02\x7e\xff\xff", b"{", b"[" * 50]


@pytest.mark.parametrize("name", sorted(http_targets.TARGETS))
def test_mutated_requests(name):
    """Valid requests with flipped, inserted, deleted, repeated and cut bytes get clean answers."""
    target = http_targets.TARGETS[name]
    words = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(_WORDS)), max_size=3)

    @FUZZ
    @given(seed=st.sampled_from(http_targets.SEEDS[name]), mutations=st.lists(mutation, max_size=5),
           inserted=words)
    def check(seed, mutations, inserted):
        data = bytearray(mutate(seed, mutations))
        for position, word in inserted:
            at = 1 + position % max(len(data), 1)
            data[at:at] = word
        target(bytes(data))

    check()


@pytest.mark.parametrize("name", sorted(http_targets.TARGETS))
def test_random_bytes(name):
    """Random bytes on the listener are refused cleanly (or ignored), never a failure."""
    target = http_targets.TARGETS[name]

    @FUZZ
    @given(data=st.binary(max_size=300))
    def check(data):
        target(data)

    check()
