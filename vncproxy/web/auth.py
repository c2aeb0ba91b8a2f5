"""
API keys: loaded from a file, compared in constant time.

The key file holds one key per line (blank lines and C{#} comments ignored). When the
configuration names no file, the service creates one with a random key in its state directory
(mode 0600) on first start, so a fresh install is never open to everyone.
"""

import hashlib
import hmac
import os
import secrets
import stat

from twisted.logger import Logger

_log = Logger()

MIN_KEY_LENGTH = 16


class KeyFileError(RuntimeError):
    pass


def load_keys(path):
    """
    Read the keys in C{path}.

    @raise KeyFileError: when the file cannot be read, holds no key, holds a key shorter than
        L{MIN_KEY_LENGTH}, or is readable by everyone.
    """
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read API key file: {e.strerror}") from None
    if st.st_mode & stat.S_IROTH:
        raise KeyFileError(f"{path}: API key file must not be readable by others (chmod o-r)")
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise KeyFileError(f"{path}: no API key in the file")
    for number, key in enumerate(keys, 1):
        if len(key) < MIN_KEY_LENGTH:
            raise KeyFileError(f"{path}: key {number} is shorter than {MIN_KEY_LENGTH} characters")
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
