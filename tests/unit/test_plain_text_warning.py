"""
Tests for L{vncproxy.service.plain_text_exposed}: which console listeners the start-up warning
names (plain text on a non-loopback address).
"""

import pytest

from vncproxy import config
from vncproxy.service import plain_text_exposed


@pytest.mark.parametrize("console,xvpvnc,expected", [
    ("tcp:6080", "tcp:6081", [("console", "all interfaces"), ("xvpvnc", "all interfaces")]),
    ("tcp:6080:interface=127.0.0.1", "tcp:6081:interface=\\:\\:1", []),
    ("tcp:6080:interface=localhost", "tcp:6081:interface=127.0.0.2", []),
    ("tcp:6080:interface=0.0.0.0", "tcp:6081:interface=10.0.0.7",
     [("console", "all interfaces"), ("xvpvnc", "10.0.0.7")]),
    ("tcp6:6080:interface=\\:\\:", "unix:/run/consoleproxy/xvp.sock", [("console", "all interfaces")]),
    ("ssl:6443:privateKey=k.pem", "systemd:domain=INET:index=0", []),
])
def test_listeners_named_by_the_warning(console, xvpvnc, expected):
    cfg = config.defaults(console_listen=console, xvpvnc_listen=xvpvnc,
                          vnc_listen="tcp:6084:interface=127.0.0.1")
    assert plain_text_exposed(cfg) == expected


def test_the_native_vnc_listener_is_named_too():
    cfg = config.defaults(console_listen="tcp:6080:interface=127.0.0.1",
                          xvpvnc_listen="tcp:6081:interface=127.0.0.1", vnc_listen="tcp:6084")
    assert plain_text_exposed(cfg) == [("vnc", "all interfaces")]
