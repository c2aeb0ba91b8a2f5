"""
A node under a front door: the URLs it derives from public_url, [console] prefix and
[console] public_xvpvnc_port and public_vnc_port, and the console listener's handling of a kept
prefix.
"""

import pytest
from twisted.web.test.requesthelper import DummyRequest

from vncproxy import config
from vncproxy.web.site import strip_prefix


def node(keys):
    return config.from_string("", overrides=[(s, k, v) for (s, k), v in keys.items()])


def test_prefix_is_the_path_of_public_url_and_reaches_the_listener_only_when_kept():
    stripped = node({("console", "public_url"): "https://front.example.com/n/node17/"})
    kept = node({("console", "public_url"): "https://front.example.com/n/node17",
                   ("console", "prefix"): "kept"})
    for c in (stripped, kept):
        assert c.public_path_prefix == "/n/node17"
        assert c.websocket_base_url == "wss://front.example.com/n/node17"
    assert (stripped.listener_path_prefix, kept.listener_path_prefix) == ("", "/n/node17")
    with pytest.raises(config.ConfigError, match=r"\[console\] prefix: must be one of"):
        node({("console", "prefix"): "removed"})


def test_xvpvnc_urls_use_the_front_doors_port_for_this_node():
    c = node({("console", "public_url"): "https://front.example.com/n/node17",
                ("console", "public_xvpvnc_port"): "6117",
                ("console", "public_vnc_port"): "6417"})
    assert c.xvpvnc_base_url == "http://front.example.com:6117"
    assert c.native_vnc_url("AbCd2345") == "vnc://:AbCd2345@front.example.com:6417"


def test_proxy_protocol_listeners_keep_their_port_in_derived_urls():
    """haproxy:tcp:PORT listeners (PROXY protocol) are accepted, and URLs name PORT."""
    c = node({("listen", "console"): "haproxy:tcp:6080:interface=10.0.0.17",
                ("listen", "xvpvnc"): "haproxy:tcp:6081:interface=10.0.0.17",
                ("listen", "vnc"): "haproxy:tcp:6084:interface=10.0.0.17"})
    assert c.console_base_url == "http://10.0.0.17:6080"
    assert c.xvpvnc_base_url == "http://10.0.0.17:6081"
    assert c.native_vnc_url("AbCd2345") == "vnc://:AbCd2345@10.0.0.17:6084"


@pytest.mark.parametrize("uri, path, rest", [
    (b"/n/node17/websockify?token=T", b"/websockify", b"/websockify?token=T"),
    (b"/n/node17/", b"/", b"/"),
    (b"/n/node17", b"/", b"/"),
    (b"/n/node17/v1/instances/x/console?access_token=a/b", b"/v1/instances/x/console",
     b"/v1/instances/x/console?access_token=a/b"),
])
def test_strip_prefix_leaves_the_paths_of_a_node_at_the_root(uri, path, rest):
    request = DummyRequest([])
    request.uri, request.path = uri, uri.split(b"?")[0]
    assert strip_prefix(request, b"/n/node17")
    assert (request.path, request.uri) == (path, rest)
    assert request.postpath == path.split(b"/")[1:]


@pytest.mark.parametrize("uri", [b"/websockify?token=T", b"/n/node1/x", b"/n/node170/x", b"/"])
def test_paths_outside_the_prefix_are_not_ours(uri):
    request = DummyRequest([])
    request.uri, request.path = uri, uri.split(b"?")[0]
    assert not strip_prefix(request, b"/n/node17")
