"""
Reading the parts of a Twisted server endpoint string we need ourselves: its type, port and
interface (Twisted parses and validates the whole string; see L{vncproxy.config}).
"""


def parse_args(description):
    """
    The positional and keyword parts of an endpoint string: colon-separated, with backslash
    escapes (C{tcp:6080:interface=\\:\\:1} -> C{(["tcp", "6080"], {"interface": "::1"})}).
    """
    parts, current, escaped = [], "", False
    for ch in description:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    args = [p for p in parts if "=" not in p]
    kwargs = dict(p.split("=", 1) for p in parts if "=" in p)
    return args, kwargs


def unwrapped(description):
    """
    The endpoint a C{haproxy:} (PROXY protocol) wrapper wraps, or C{description} itself.
    """
    return description[len("haproxy:"):] if description.startswith("haproxy:") else description


def port(description):
    """
    The TCP port of a C{tcp:}/C{tcp6:}/C{ssl:} endpoint string, or C{None} (C{unix:},
    C{systemd:}); through a C{haproxy:} wrapper.
    """
    args, kwargs = parse_args(unwrapped(description))
    if args and args[0] in ("tcp", "ssl", "tcp6") and len(args) > 1:
        return int(args[1])
    return int(kwargs["port"]) if "port" in kwargs else None


__all__ = ["parse_args", "port", "unwrapped"]
