"""
What the soak reads of the service from outside: its open descriptors (C{/proc/PID/fd}, counted
and by kind) and its metrics (C{/metrics}, by console type).
"""

import os
import re
import urllib.request


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def descriptor_kinds(pid):
    """
    What the process's descriptors point at, counted: C{socket}, C{pipe}, C{anon_inode:...}
    or the file's path.
    """
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":", 1)[0] if target.startswith(("socket:", "pipe:")) else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def kinds_diff(before, after):
    """
    The kinds of descriptor whose count changed: {kind: change}.
    """
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after))
            if after.get(k, 0) != before.get(k, 0)}


def scrape(api_url):
    """
    The service's metrics: {(name, console_type or ""): value}.
    """
    with urllib.request.urlopen(api_url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(consoleproxy_\w+?)(?:_total)?(?:\{console_type="(\w+)"\})? (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def by_type(metrics, name):
    return {t: int(v) for (n, t), v in metrics.items() if n == name and t}
