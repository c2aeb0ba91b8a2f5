"""
The console and API listeners answer a request in an HTTP version other than 1.0 and 1.1 with
our own 400 (a JSON error) and close, on every Twisted version (Twisted 22.4 would answer in the
version asked, "HTTP/2.0 200 OK"), without Twisted's private helper for it.
"""

import json

import pytest

from tests.fuzz.http_targets import exchange, world


@pytest.mark.parametrize("listener", ["api", "console"])
@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2"])
def test_other_http_versions_get_a_json_400(listener, version):
    """GET / in another version: one 400 with a JSON error body, then the connection closes."""
    w = world()
    site = getattr(w, listener)
    written = exchange(site, b"GET / " + version + b"\r\nHost: x\r\n\r\n", w.clock)
    head, _, body = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in head
    assert json.loads(body) == {"error": {"code": 400, "message": "unsupported HTTP version"}}
