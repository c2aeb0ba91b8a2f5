"""
Port picking for tests that need a real listening port for a process they start.

Bind-then-close is racy (another process may take the port before it is used again); prefer
port 0 on the listener itself where the code under test can report the port it got.
"""

import socket


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
