"""
API keys: loaded from a file, compared in constant time.

The key file holds one key per line (blank lines and C{#} comments ignored). When the
configuration names no file, the service creates one with a random key in its state directory
(mode 0600) on first start, so a fresh install is never open to everyone.
"""

import hashlib
import hmac
import math
import os
import secrets
import stat
from collections import Counter

from twisted.logger import Logger

_log = Logger()

MIN_KEY_LENGTH = 16
#: Least estimated strength of a key, in bits: its length times the Shannon entropy of its
#: characters (a random key of 16 characters from 16 or more symbols has 64 or more;
#: "aaaaaaaaaaaaaaaa" has 0, "abababababababab" 16).
MIN_KEY_BITS = 64


def estimated_bits(key):
    """
    A key's estimated strength: its length times the Shannon entropy (bits per character) of
    its character frequencies. It overestimates patterned keys ("0123456789abcdef") but
    catches repeats and small alphabets, the usual typed-in weak keys.
    """
    counts = Counter(key)
    per_char = -sum(n / len(key) * math.log2(n / len(key)) for n in counts.values())
    return len(key) * per_char + 0.0  # + 0.0: no "-0"


class KeyFileError(RuntimeError):
    pass


def load_keys(path):
    """
    Read the keys in C{path}.

    @raise KeyFileError: when the file cannot be read, holds no key, holds a key shorter than
        L{MIN_KEY_LENGTH} or weaker than L{MIN_KEY_BITS}, is readable by everyone, or is
        writable by its group or others.
    """
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read API key file: {e.strerror}") from None
    if st.st_mode & stat.S_IROTH:
        raise KeyFileError(f"{path}: API key file must not be readable by others (chmod o-r)")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KeyFileError(f"{path}: API key file must not be writable by group or others "
                           "(chmod go-w): whoever can write it can add a key")
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise KeyFileError(f"{path}: no API key in the file")
    for number, key in enumerate(keys, 1):
        if len(key) < MIN_KEY_LENGTH:
            raise KeyFileError(f"{path}: key {number} is shorter than {MIN_KEY_LENGTH} characters")
        bits = estimated_bits(key)
        if bits < MIN_KEY_BITS:
            raise KeyFileError(
                f"{path}: key {number} is too easy to guess (about {bits:.0f} bits of entropy, "
                f"{MIN_KEY_BITS} needed: too few distinct characters or a repeated pattern); "
                "use a random key, e.g. from: python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'")
    return tuple(keys)


def ensure_key_file(state_dir):
    """
    The default key file, C{STATE_DIR/api-keys}, created with one random key when missing.

    @return: its path.
    """
    path = os.path.join(state_dir, "api-keys")
    if not os.path.exists(path):
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# consoleproxy API keys, one per line\n" + secrets.token_urlsafe(32) + "\n")
        _log.info("created an API key in {path}", path=path)
    return path


class KeyChecker:
    """
    Checks a presented key against every configured key without an early exit, so the time
    taken says nothing about which key (or how much of one) matched.
    """

    def __init__(self, keys):
        # Compared as SHA-256 digests: equal lengths, so compare_digest's time says nothing
        # about a key's length either.
        self._keys = [(hashlib.sha256(k.encode("utf-8")).digest(), k.encode("utf-8"))
                      for k in keys]

    def identify(self, presented):
        """
        @return: a label for the caller (C{key-} and 8 hex digits of the key's SHA-256: safe to
            log, useless to an attacker) when C{presented} is a configured key, else C{None}.
        """
        if not presented:
            return None
        candidate = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        match = None
        for digest, key in self._keys:
            if hmac.compare_digest(candidate, digest):
                match = key
        if match is None:
            return None
        return "key-" + hashlib.sha256(match).hexdigest()[:8]


def presented_key(request):
    """
    The key a request carries in C{X-Auth-Token} or C{Authorization: Bearer}, or C{None}.
    """
    token = request.getHeader(b"x-auth-token")
    if token:
        return token.decode("latin-1").strip()
    authorization = request.getHeader(b"authorization")
    if authorization:
        scheme, _, value = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
