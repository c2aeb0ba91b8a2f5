"""
The parsers of configuration values: each turns the text of one key (stripped) into its value,
or raises C{ValueError} saying what is wrong with it (L{vncproxy.config} adds the file, the
section and the key). Parsers that take arguments (C{positive(int)}, C{one_of("a", "b")}) return
the parser.

Listener values are Twisted endpoint strings, checked by building the endpoint (nothing listens
yet); lists are words separated by spaces or commas.
"""

import ipaddress
from urllib.parse import urlsplit

from twisted.internet.endpoints import serverFromString

from vncproxy.endpoints import parse_args


def endpoint(value):
    # Building the endpoint object checks the type and its arguments; nothing listens yet.
    try:
        serverFromString(object(), value)
    except Exception as e:
        raise ValueError(f"not a server endpoint string ({e})") from None
    args, kwargs = parse_args(value)
    if args[:1] == ["ssl"] and "sslmethod" in kwargs:
        raise ValueError("sslmethod is not supported: TLS listeners speak TLS 1.2 and later")
    return value


def optional_endpoint(kind):
    def parse(value):
        if not value:
            return ""
        if parse_args(value)[0][:1] != [kind]:
            raise ValueError(f"must be a {kind}: endpoint string (or empty: none)")
        return endpoint(value)

    return parse


def mode(value):
    try:
        bits = int(value, 8)
    except ValueError:
        raise ValueError("must be an octal file mode such as 0660") from None
    if not 0 <= bits <= 0o777:
        raise ValueError("must be an octal file mode such as 0660")
    return bits


def positive(kind):
    def parse(value):
        number = kind(value)
        if number <= 0:
            raise ValueError("must be greater than zero")
        return number

    return parse


def at_least(kind, minimum):
    def parse(value):
        number = kind(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        return number

    return parse


def non_negative(kind):
    def parse(value):
        number = kind(value)
        if number < 0:
            raise ValueError("must not be negative")
        return number

    return parse


def one_of(*choices):
    def parse(value):
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return value

    return parse


def words(value):
    return tuple(w for w in value.replace(",", " ").split() if w)


def networks(value):
    entries = words(value)
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return entries


def listeners(value):
    names = words(value)
    for name in names:
        if name not in ("api", "console", "xvpvnc", "vnc"):
            raise ValueError(f"{name!r} is not a listener (api, console, xvpvnc, vnc)")
    return names


def issuers(value):
    from vncproxy.grants import parse_public_key  # cryptography: loaded only when used

    keys = words(value)
    for key in keys:
        parse_public_key(key)
    return keys


def node_id(value):
    if value and not all(c.isalnum() or c in "-_." for c in value):
        raise ValueError("letters, digits, '-', '_' and '.' only")
    return value


def boolean(value):
    lowered = value.lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError("must be true or false")


def url(value):
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError("must be an http(s):// or ws(s):// URL with a host")
    return value.rstrip("/")
