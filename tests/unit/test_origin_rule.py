"""
Tests for L{vncproxy.web.websocket.origin_allowed}: the exact Origin rule (docs/security.md).
"""

import pytest
from twisted.internet.address import IPv4Address, IPv6Address

from vncproxy import config
from vncproxy.web.websocket import origin_allowed

LOOPBACK = IPv4Address("TCP", "127.0.0.1", 6080)
PUBLIC = IPv4Address("TCP", "192.0.2.10", 6080)
CFG = config.defaults(console_listen="tcp:6080:interface=192.0.2.10",
                      allowed_origins=("portal.example", "http://tools.example:8080"))
BEHIND_LB = config.defaults(public_url="https://console.example.com")


@pytest.mark.parametrize("origin,local,cfg,secure,allowed", [
    (None, PUBLIC, CFG, False, True),                              # not a browser
    ("http://192.0.2.10:6080", PUBLIC, CFG, False, True),          # the listener's address
    ("https://192.0.2.10:6080", PUBLIC, CFG, False, False),        # wrong scheme
    ("https://192.0.2.10:6080", PUBLIC, CFG, True, True),          # an ssl: listener
    ("http://192.0.2.10:6081", PUBLIC, CFG, False, False),         # wrong port
    ("http://rebound.example:6080", PUBLIC, CFG, False, False),    # DNS rebinding
    ("http://localhost:6080", LOOPBACK, CFG, False, True),         # loopback listener
    ("http://localhost:6080", PUBLIC, CFG, False, False),          # not on a public address
    ("http://[::1]:6080", IPv6Address("TCP", "::1", 6080), CFG, False, True),
    ("https://portal.example", PUBLIC, CFG, False, True),          # bare host: https on 443
    ("https://portal.example:443", PUBLIC, CFG, False, True),
    ("http://portal.example", PUBLIC, CFG, False, False),
    ("https://portal.example:8443", PUBLIC, CFG, False, False),
    ("https://sub.portal.example", PUBLIC, CFG, False, False),
    ("http://tools.example:8080", PUBLIC, CFG, False, True),       # full origin: exact
    ("http://tools.example", PUBLIC, CFG, False, False),
    ("https://console.example.com", PUBLIC, BEHIND_LB, False, True),  # public_url
    ("https://console.example.com:8443", PUBLIC, BEHIND_LB, False, False),
    ("null", PUBLIC, CFG, False, False),
    ("https://evil.example", None, config.defaults(allowed_origins=("*",)), False, True),
])
def test_origin_rule(origin, local, cfg, secure, allowed):
    assert origin_allowed(origin, local, cfg, secure) is allowed
