"""
The OpenStack shapes: remote-consoles (with and without project id), the legacy console
actions, microversions and Nova's status codes; each URL they return opens the console.

On the memory tier (L{tests.support.memory}): Twisted's HTTP client and Autobahn's WebSocket
client reach the service on a memory clock; the legacy action keeps a real-socket test.
"""

from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.support import api
from tests.support.memory import MemoryProxy
from tests.support.viewer import RfbViewer, WebSocketPipe, open_websocket

in_thread = threads.deferToThread
VM = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"


def remote(proxy, protocol, type_, project=None, version="2.6", server=VM):
    """POST remote-consoles on C{proxy}: a memory proxy, or (blocking) a real-socket one."""
    prefix = f"/v2.1/{project}" if project else "/v2.1"
    headers = {"X-OpenStack-Nova-API-Version": version} if version else {}
    call = proxy.call if isinstance(proxy, MemoryProxy) else (
        lambda path, *a, **kw: api.call(proxy.api_url + path, *a, **kw))
    return call(f"{prefix}/servers/{server}/remote-consoles", "POST",
                {"remote_console": {"protocol": protocol, "type": type_}},
                key=proxy.key, headers=headers)


def action(proxy, body, project=None):
    prefix = f"/v2.1/{project}" if project else "/v2.1"
    if isinstance(proxy, MemoryProxy):
        return proxy.call(f"{prefix}/servers/{VM}/action", "POST", body, key=proxy.key)
    return api.call(f"{proxy.api_url}{prefix}/servers/{VM}/action", "POST", body, key=proxy.key)


def novnc_websocket_url(proxy, url):
    """What noVNC's vnc_auto.html does with ?path=: ws://HOST:PORT/ + path."""
    parts = urlsplit(url)
    assert parts.path == "/vnc_auto.html"
    path = parse_qs(parts.query)["path"][0]
    return f"{proxy.ws_url}/{path}"


def opens(url):
    ws = open_websocket(url)
    init = RfbViewer(WebSocketPipe(ws)).handshake()
    ws.close()
    return init.name


def opens_in_memory(proxy, url):
    """The server name an RFB handshake over C{url} reaches (Autobahn's memory client)."""
    viewer = proxy.open_websocket(url)
    init = proxy.rfb_handshake(viewer)
    viewer.sendClose()
    proxy.network.flush()
    return init.name


@pytest.mark.parametrize("project", [None, "6f70656e737461636b"])
def test_remote_console_novnc_url_opens_the_console(memory_proxy, project):
    """remote-consoles returns a noVNC URL whose websockify path opens the console."""
    proxy = memory_proxy
    status, body = remote(proxy, "vnc", "novnc", project=project)
    assert status == 200, body
    console = body["remote_console"]
    assert (console["protocol"], console["type"]) == ("vnc", "novnc")
    assert console["url"].startswith(proxy.service.ctx.config.console_base_url
                                     + "/vnc_auto.html?path=websockify%3Ftoken%3D")
    assert opens_in_memory(proxy, novnc_websocket_url(proxy, console["url"])) == "fake vm"


@pytest_twisted.inlineCallbacks
def test_legacy_get_vnc_console_opens_the_console(proxy):
    """
    os-getVNCConsole returns {"console": {"type", "url"}} whose URL opens the console (over
    real sockets: the smoke test of this file).
    """
    def scenario():
        status, body = action(proxy, {"os-getVNCConsole": {"type": "novnc"}})
        assert status == 200, body
        assert body["console"]["type"] == "novnc"
        return opens(novnc_websocket_url(proxy, body["console"]["url"]))
    assert (yield in_thread(scenario)) == "fake vm"


def test_xvpvnc_and_serial_url_shapes(memory_proxy):
    """xvpvnc URLs point at the xvpvnc port's /console; serial URLs are ws://HOST:PORT/?token=."""
    proxy = memory_proxy
    proxy.hypervisor.set_consoles("vm1", serial_pty="/dev/pts/99")
    status, body = remote(proxy, "vnc", "xvpvnc")
    assert status == 200
    url = body["remote_console"]["url"]
    assert url.startswith(proxy.service.ctx.config.xvpvnc_base_url + "/console?token=")


@pytest.mark.parametrize("version, status", [
    ("2.1", 404), ("2.5", 404), ("2.6", 200), ("2.96", 200), ("latest", 200), (None, 200),
    ("3.0", 406), ("two", 400),
])
def test_microversions(memory_proxy, version, status):
    """Below 2.6 remote-consoles is 404 as in Nova; no header means the newest; junk is 400."""
    proxy = memory_proxy
    got, _ = remote(proxy, "vnc", "novnc", version=version)
    assert got == status


def test_openstack_api_version_header_form(memory_proxy):
    """The OpenStack-API-Version: compute 2.x form works and is echoed back."""
    response = memory_proxy.request(
        f"/v2.1/servers/{VM}/remote-consoles", "POST",
        raw=b'{"remote_console": {"protocol": "vnc", "type": "novnc"}}',
        headers={"X-Auth-Token": memory_proxy.key, "OpenStack-API-Version": "compute 2.8"})
    assert (response.status, response.headers.getRawHeaders("OpenStack-API-Version")) == (
        200, ["compute 2.8"])


@pytest.mark.parametrize("protocol, type_, status", [
    ("vnc", "spice-html5", 400), ("serial", "novnc", 400), ("vnc", "bogus", 400),
    ("bogus", "novnc", 400), ("spice", "spice-html5", 501), ("rdp", "rdp-html5", 501),
    ("mks", "webmks", 501), ("spice", "novnc", 400),
])
def test_protocol_type_pairs(memory_proxy, protocol, type_, status):
    """A pair Nova does not define is 400; spice, rdp and mks (which we do not serve) are 501."""
    proxy = memory_proxy
    got, body = remote(proxy, protocol, type_)
    assert got == status
    name = {400: "badRequest", 501: "notImplemented"}[status]
    assert list(body) == [name] and body[name]["code"] == status


@pytest.mark.parametrize("body, status", [
    ({"os-getSPICEConsole": {"type": "spice-html5"}}, 501),
    ({"os-getRDPConsole": {"type": "rdp-html5"}}, 501),
    ({"os-getVNCConsole": {"type": "serial"}}, 400),
    ({"os-getVNCConsole": "novnc"}, 400),
    ({"os-reboot": {"type": "HARD"}}, 400),
    ({"os-getVNCConsole": {"type": "novnc"}, "os-getSerialConsole": {"type": "serial"}}, 400),
])
def test_legacy_action_errors(memory_proxy, body, status):
    """Unknown or malformed console actions are 400; spice and rdp actions 501."""
    proxy = memory_proxy
    got, _ = action(proxy, body, "proj")
    assert got == status


@pytest.mark.parametrize("server, status", [("nosuch", 404), ("off1", 409)])
def test_openstack_instance_errors(memory_proxy, server, status):
    """Unknown servers are 404, stopped ones 409, in the OpenStack routes too."""
    proxy = memory_proxy
    got, body = remote(proxy, "vnc", "novnc", server=server)
    assert got == status
    assert list(body) == [{404: "itemNotFound", 409: "conflictingRequest"}[status]]


def test_openstack_routes_need_a_key(memory_proxy):
    """Without a key, the OpenStack routes are 401."""
    proxy = memory_proxy
    got, body = proxy.call(f"/v2.1/servers/{VM}/remote-consoles",
                           "POST", {"remote_console": {"protocol": "vnc", "type": "novnc"}})
    assert got == 401
    assert body == {"unauthorized": {"code": 401, "message": "missing or invalid API key"}}


@pytest.mark.parametrize("console", [
    {"protocol": ["vnc"], "type": "novnc"},  # found by tests/fuzz: unhashable protocol was a 500
    {"protocol": {"vnc": 1}, "type": "novnc"},
    {"protocol": "vnc", "type": ["novnc"]},
])
def test_non_string_protocol_or_type_is_400(memory_proxy, console):
    """A protocol or type that is not a string is a 400, not a server error."""
    proxy = memory_proxy
    got, body = proxy.call(f"/v2.1/servers/{VM}/remote-consoles",
                           "POST", {"remote_console": console}, key=proxy.key)
    assert got == 400


def test_novnc_url_behind_a_path_prefix_keeps_the_prefix_in_the_websocket_path(make_memory_proxy):
    """With public_url under a prefix, noVNC's path= names the prefixed WebSocket path."""
    proxy = make_memory_proxy(public_url="https://cloud.example.com:8443/console/")
    status, body = remote(proxy, "vnc", "novnc")
    assert status == 200
    url = body["remote_console"]["url"]
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("cloud.example.com:8443", "/console/vnc_auto.html")
    path = parse_qs(parts.query)["path"][0]
    assert path.startswith("console/websockify?token=")
    # Through a reverse proxy that strips the prefix, the path reaches our listener intact.
    stripped = path[len("console/"):]
    name = opens_in_memory(proxy, f"{proxy.ws_url}/{stripped}")
    assert name
