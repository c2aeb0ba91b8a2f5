"""
VNC Authentication (RFB security type 2) as pure functions.

The response to a 16-byte challenge is its DES-ECB encryption under a key
made from the password: truncated or NUL-padded to 8 bytes, with the bits of
each key byte reversed (a quirk of the original VNC code).  Only the first 8
password bytes matter, and an observed challenge/response pair allows an
offline brute force of the password: use one-time, short-lived passwords.

DES is single DES; C{cryptography} provides it as TripleDES with the 8-byte
key repeated three times (K1 = K2 = K3 reduces 3DES to DES).
"""

from __future__ import annotations

import hmac
import os
import warnings
from typing import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.utils import CryptographyDeprecationWarning

from vncproxy.rfb.wire import CHALLENGE_LENGTH

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # cryptography < 43
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

__all__ = ["check_response", "new_challenge", "vnc_response"]

_KEY_LENGTH = 8

#: byte -> the same byte with its bit order reversed
_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _des_key(password: bytes) -> bytes:
    """
    @param password: the VNC password; bytes after the 8th are ignored.
    @return: the 8-byte DES key.
    """
    return password[:_KEY_LENGTH].ljust(_KEY_LENGTH, b"\0").translate(_BIT_REVERSED)


def vnc_response(password: bytes, challenge: bytes) -> bytes:
    """
    Compute the client's answer to a VNC Authentication challenge.

    @param password: the VNC password (only the first 8 bytes are used).
    @param challenge: the 16 bytes the server sent.
    @return: the 16-byte response.
    @raise ValueError: if C{challenge} is not 16 bytes long.
    """
    if len(challenge) != CHALLENGE_LENGTH:
        raise ValueError(f"VNC challenge must be {CHALLENGE_LENGTH} bytes")
    key = _des_key(bytes(password))
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(bytes(challenge)) + encryptor.finalize()


def check_response(password: bytes, challenge: bytes, response: bytes) -> bool:
    """
    Check a viewer's answer in constant time.

    @param password: the expected VNC password.
    @param challenge: the 16 bytes we sent.
    @param response: what the viewer sent back.
    @return: whether C{response} proves knowledge of C{password}.
    """
    if len(challenge) != CHALLENGE_LENGTH or len(response) != CHALLENGE_LENGTH:
        return False
    return hmac.compare_digest(vnc_response(password, challenge), bytes(response))


def new_challenge(randbytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """
    @param randbytes: source of random bytes (injectable for tests).
    @return: a fresh 16-byte challenge.
    @raise ValueError: if C{randbytes} returned the wrong length.
    """
    challenge = bytes(randbytes(CHALLENGE_LENGTH))
    if len(challenge) != CHALLENGE_LENGTH:
        raise ValueError(f"randbytes returned {len(challenge)} bytes, not 16")
    return challenge
