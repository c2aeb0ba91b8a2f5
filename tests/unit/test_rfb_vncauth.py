"""
Tests for L{vncproxy.rfb.vncauth}.

The known answers were computed independently with OpenSSL's single DES,
the key bit-reversed by hand::

    printf '\\x73\\x7d...' | openssl enc -des-ecb -provider legacy \\
        -provider default -K <key> -nopad | xxd -p

"secret" = 73 65 63 72 65 74 00 00 -> key ce a6 c6 4e a6 2e 00 00;
"password" = 70 61 73 73 77 6f 72 64 -> key 0e 86 ce ce ee f6 4e 26.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vncproxy.rfb.vncauth import check_response, new_challenge, vnc_response

#: The challenge QEMU 7.2 sent in the testbed (docs/qemu-facts.md).
QEMU_CHALLENGE = bytes.fromhex("737da4e29ed60ba9a0324f57f08a4053")

KNOWN_ANSWERS = [
    (b"secret", "a59937616d88bd5acc077686e8bcb3f1"),
    (b"password123", "445e8de5e440fe562b78300cbe54db5e"),
    (b"", "547cee31c86975b43885b975513c1cd1"),
]


@pytest.mark.parametrize("password, expected", KNOWN_ANSWERS)
def test_known_answer(password, expected):
    """vnc_response matches DES-ECB computed by OpenSSL with the bit-reversed key."""
    assert vnc_response(password, QEMU_CHALLENGE) == bytes.fromhex(expected)


def test_only_first_eight_bytes_count():
    """A password longer than 8 bytes answers like its first 8 bytes."""
    assert vnc_response(b"password123", QEMU_CHALLENGE) == vnc_response(
        b"password", QEMU_CHALLENGE
    )


def test_short_password_is_nul_padded():
    """A short password answers like the same password padded with NULs to 8 bytes."""
    assert vnc_response(b"secret", QEMU_CHALLENGE) == vnc_response(
        b"secret\0\0", QEMU_CHALLENGE
    )


def test_check_response_accepts_right_password():
    """check_response accepts the response computed with the same password."""
    response = vnc_response(b"secret", QEMU_CHALLENGE)
    assert check_response(b"secret", QEMU_CHALLENGE, response)


def test_check_response_rejects_wrong_password():
    """check_response rejects a response computed with another password."""
    response = vnc_response(b"secreT", QEMU_CHALLENGE)
    assert not check_response(b"secret", QEMU_CHALLENGE, response)


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_check_response_rejects_wrong_length(length):
    """check_response returns False (no exception) for responses that are not 16 bytes."""
    assert not check_response(b"secret", QEMU_CHALLENGE, b"\0" * length)


def test_check_response_rejects_wrong_challenge_length():
    """check_response returns False for a challenge that is not 16 bytes."""
    assert not check_response(b"secret", b"short", b"\0" * 16)


@pytest.mark.parametrize("length", [0, 8, 15, 17])
def test_vnc_response_requires_16_byte_challenge(length):
    """vnc_response refuses challenges that are not 16 bytes long."""
    with pytest.raises(ValueError):
        vnc_response(b"secret", b"\0" * length)


def test_new_challenge_uses_randbytes():
    """new_challenge returns the 16 bytes its random source gives."""
    calls = []

    def randbytes(n):
        calls.append(n)
        return QEMU_CHALLENGE

    assert new_challenge(randbytes) == QEMU_CHALLENGE
    assert calls == [16]


def test_new_challenge_default_is_fresh():
    """Two default challenges are 16 bytes long and differ."""
    first, second = new_challenge(), new_challenge()
    assert len(first) == len(second) == 16
    assert first != second


def test_new_challenge_rejects_short_random_source():
    """new_challenge refuses a random source that returns the wrong length."""
    with pytest.raises(ValueError):
        new_challenge(lambda n: b"\0" * (n - 1))


@given(password=st.binary(max_size=20), challenge=st.binary(min_size=16, max_size=16))
def test_round_trip(password, challenge):
    """Any password's own response passes check_response and is 16 bytes long."""
    response = vnc_response(password, challenge)
    assert len(response) == 16
    assert check_response(password, challenge, response)


@given(
    password=st.binary(min_size=8, max_size=8),
    tail=st.binary(max_size=8),
    challenge=st.binary(min_size=16, max_size=16),
)
def test_tail_after_eight_bytes_is_ignored(password, tail, challenge):
    """Bytes after the eighth never change the response."""
    assert vnc_response(password + tail, challenge) == vnc_response(password, challenge)
