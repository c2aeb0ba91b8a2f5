"""
Tests for L{vncproxy.urls}: every URL we hand out, from public_url or from the listeners, with
this host's name looked up once.
"""

import pytest

from vncproxy import config, hostname, urls

SECRET = "tok-EN_1"


@pytest.fixture
def fqdn_calls(monkeypatch):
    calls = []

    def getfqdn():
        calls.append(1)
        return "node7.example.net"

    urls.this_host.cache_clear()
    monkeypatch.setattr(urls.socket, "getfqdn", getfqdn)
    # the name resolves beyond loopback, so it is the one named (vncproxy.hostname)
    monkeypatch.setattr(hostname, "_addresses", lambda name: ["198.51.100.7"])
    yield calls
    urls.this_host.cache_clear()


def test_public_url_shapes_every_url():
    u = urls.Urls(config.from_string(
        "[console]\npublic_url = https://console.example.com:8443/\n"
        "[listen]\nxvpvnc = tcp:5999\nvnc = tcp:6100\n"))
    assert u.console_base == "https://console.example.com:8443"
    assert u.ibm_href("uuid-1", SECRET) == (
        "wss://console.example.com:8443/v1/instances/uuid-1/console?access_token=tok-EN_1")
    assert u.novnc(SECRET) == ("https://console.example.com:8443/vnc_auto.html"
                               "?path=websockify%3Ftoken%3Dtok-EN_1")
    assert u.serial(SECRET) == "wss://console.example.com:8443/?token=tok-EN_1"
    assert u.xvpvnc(SECRET) == "http://console.example.com:5999/console?token=tok-EN_1"
    assert u.vnc("Ab3dEf7h") == "vnc://:Ab3dEf7h@console.example.com:6100"


def test_a_public_path_prefix_reaches_novnc_websocket_path():
    u = urls.Urls(config.from_string("[console]\npublic_url = https://cloud.example/console/\n"))
    assert u.novnc(SECRET) == ("https://cloud.example/console/vnc_auto.html"
                               "?path=console%2Fwebsockify%3Ftoken%3Dtok-EN_1")
    assert u.serial(SECRET) == "wss://cloud.example/console/?token=tok-EN_1"


@pytest.mark.parametrize("listen, base", [
    ("tcp:7080:interface=192.0.2.7", "ws://192.0.2.7:7080"),
    ("tcp:7080:interface=\\:\\:1", "ws://[::1]:7080"),
    ("tcp:80:interface=192.0.2.7", "ws://192.0.2.7"),
])
def test_urls_derived_from_a_listener_interface(listen, base, fqdn_calls):
    u = urls.Urls(config.from_string(f"[listen]\nconsole = {listen}\n"))
    assert u.websocket_base == base
    assert fqdn_calls == []


def test_this_host_is_looked_up_once(fqdn_calls):
    cfg = config.from_string("[listen]\nconsole = tcp:7080\nvnc = tcp:6100\n")
    u = urls.Urls(cfg)
    assert u.websocket_base == "ws://node7.example.net:7080"
    assert u.vnc("Ab3dEf7h") == "vnc://:Ab3dEf7h@node7.example.net:6100"
    for _ in range(3):
        urls.Urls(cfg).serial(SECRET)
    assert fqdn_calls == [1]


def test_the_native_url_names_the_native_listener_by_default():
    u = urls.Urls(config.from_string("[console]\npublic_url = https://console.example.com\n"))
    assert u.vnc("Ab3dEf7h") == "vnc://:Ab3dEf7h@console.example.com:6084"
