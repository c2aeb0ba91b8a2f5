"""
A region on one machine (tests/e2e/region.py): three nodes in their own network namespaces, each
with its own QEMU guest and consoleproxy, behind real HAProxy with TLS running
etc/haproxy/region.cfg (the file docs/region.md includes). Every viewer goes through the front
door only; the test's "control plane" asks the nodes' token APIs on their own addresses (the
management side) or mints signed grants with the reference minter, tools/mint-grant.

Covered: the IBM flow (href opened through the front door, prefix stripped and kept), noVNC in
Chromium from a Nova URL, the serial page on a real guest's console, Nova's serial URL, the xvp
viewer's CONNECT from Nova's xvpvnc URL, a native viewer
(vncdotool) through its node's front port, a signed grant opening a console on its node only
and once, per-address limits seeing the real client through the PROXY protocol, and a node
killed mid-session: its viewer's connection ends, the other nodes' sessions go on and new ones
open, HAProxy takes the dead node out; a node drained as docs/region.md says closes its viewer
with 4008 through the front door. About 45 s (the three guests boot in parallel, ~15 s), a few
MB of traffic, all on loopback addresses.
"""

import base64
import http.client
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import websocket

from tests.e2e.region import Region
from tests.support import api
from tests.support.browser import canvas_rgb, differing_pixels, lit_pixels, read_screendump, watch
from tests.support.viewer import PipeClosed, RfbViewer, WebSocketPipe, xvp_connect

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
MINTER = REPO / "tools" / "mint-grant"  # the test's control plane: the reference minter


@pytest.fixture(scope="module")
def region(testbed, tmp_path_factory):
    assert shutil.which("haproxy"), "haproxy is installed by tools/testbed.sh deps"
    workdir = tmp_path_factory.mktemp("region")
    public_key = subprocess.run([sys.executable, str(MINTER), "keygen", str(workdir / "cp.pem")],
                                check=True, capture_output=True, text=True).stdout.strip()
    r = Region(workdir, testbed.images_dir, settings={
        "tokens.trusted_issuers": public_key,
        "tokens.token_ttl": "180",
        "tokens.reconnect_grace": "0",
        "sessions.max_vnc_sessions": "4",
        "ratelimit.slow_after": "10",
        "ratelimit.refuse_after": "5",
    })
    try:
        yield r.start()
    finally:
        r.close()
        ARTIFACTS.mkdir(exist_ok=True)
        for node in r.nodes:
            (ARTIFACTS / f"region-{node.name}.log").write_text(node.log())


def ssl_context(region):
    context = ssl.create_default_context(cadata=region.cert_pem.decode())
    context.check_hostname = False  # the certificate names the front door's IP address
    return context


def front_ws(region, url, timeout=20):
    """A WebSocket through the front door (TLS verified against the test's certificate)."""
    return websocket.create_connection(
        url, timeout=timeout, suppress_origin=True,
        sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(region.workdir / "ca.pem"),
                "check_hostname": False})


def viewer(region, url):
    ws = front_ws(region, url)
    return ws, RfbViewer(WebSocketPipe(ws)).handshake()


def status_of(region, path, source=None):
    """The front door's answer to a WebSocket upgrade on C{path} from address C{source}."""
    conn = http.client.HTTPSConnection(region.front, region.front_port, context=ssl_context(region),
                                       source_address=(source, 0) if source else None,
                                       timeout=20)
    try:
        conn.request("GET", path, headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()})
        response = conn.getresponse()
        return response.status
    finally:
        conn.close()


def ibm_grant(node, console_type="vnc", **extra):
    status, body = api.grant(node.api_url, node.key, node.vnc_instance if console_type == "vnc"
                             else node.serial_instance, console_type, **extra)
    assert status == 200, body
    return body


def grant_for(region, node):
    """The control plane's grant for node's VNC console (tools/mint-grant, the region's key)."""
    return subprocess.run([sys.executable, str(MINTER), "mint", str(region.workdir / "cp.pem"),
                           "--node", node.name, "--instance", node.vnc_instance, "--ttl", "60"],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("n", [1, 3])  # node 1: prefix stripped by HAProxy; node 3: kept
def test_ibm_href_opens_the_guest_through_the_front_door(region, n):
    """The IBM href names the front door and the node's prefix, and reaches that node's QEMU."""
    node = region.node(n)
    body = ibm_grant(node)
    assert body["href"].startswith(f"wss://{region.front}:{region.front_port}/n/{node.name}"
                                   "/v1/instances/")
    ws, init = viewer(region, body["href"])
    ws.close()
    assert init.name == f"QEMU (region-{node.name})"


def test_signed_grant_opens_its_node_only_and_once(region):
    """The control plane's grant for node 2 opens node 2's guest through the front door; on
    nodes 1 and 3, and replayed on node 2, it gets the bad token's 401."""
    node = region.node(2)
    grant = grant_for(region, node)
    for other in (1, 3):
        assert status_of(region, f"/n/node{other}/websockify?token={grant}") == 401
    ws, init = viewer(region, f"wss://{region.front}:{region.front_port}/n/node2/websockify?token={grant}")
    ws.close()
    assert init.name == "QEMU (region-node2)"
    assert status_of(region, f"/n/node2/websockify?token={grant}") == 401
    assert status_of(region, "/n/node2/websockify?token=bad") == 401


def test_the_front_door_routes_only_node_prefixes(region):
    """Unknown nodes, paths outside /n/NODE/ and the names of HAProxy's other sections are 404
    at the front door; a node's prefix reaches it."""
    for path in ("/websockify?token=x", "/n/node9/websockify?token=x", "/n/xvpvnc_node1/x",
                 "/n/unknown_node/x", "/n/node1"):
        assert status_of(region, path) == 404, path
    assert status_of(region, "/n/node1/websockify?token=x") == 401


def test_per_address_limits_see_the_real_client(region):
    """Five bad tokens (refuse_after) from one client address: that address is refused (429) by
    the node, while another client behind the same HAProxy still gets its console."""
    node = region.node(1)
    bad, good = region.clients
    for _ in range(5):
        assert status_of(region, "/n/node1/websockify?token=wrong", source=bad) == 401
    assert status_of(region, "/n/node1/websockify?token=wrong", source=bad) == 429
    token = ibm_grant(node)["access_token"]
    assert status_of(region, f"/n/node1/websockify?token={token}", source=bad) == 429
    # the same token, from the other client: the upgrade goes through (it was not spent)
    assert status_of(region, f"/n/node1/websockify?token={token}", source=good) == 101
    # the node's audit names the real client, never HAProxy's address
    assert f"refused - console from tcp4:{bad}:" in node.log()


def test_native_viewer_through_its_nodes_front_port(region, tmp_path):
    """vncdotool, given the vnc:// URL's password and the front door's port for node 3, captures
    node 3's guest screen (as node 3's QEMU reports it)."""
    node = region.node(3)
    body = ibm_grant(node)
    assert body["vnc_url"] == f"vnc://:{body['password']}@{region.front}:{node.front_vnc_port}"
    vncdo = Path(sys.executable).with_name("vncdo")
    vncdo = str(vncdo) if vncdo.exists() else shutil.which("vncdo")
    shot = tmp_path / "native.png"
    run = subprocess.run([vncdo, "-s", f"{region.front}::{node.front_vnc_port}", "-p", body["password"],
                          "capture", str(shot)], capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "region-native-node3.png")
    width, height, seen = read_screendump(shot)
    truth = read_screendump(node.screendump(tmp_path / "qemu.ppm"))
    assert (width, height) == truth[:2] == (720, 400)  # the guest's VGA text console
    assert lit_pixels(seen) > 0.002 * width * height, "the capture is blank"
    # one capture each, taken a moment apart: only the blinking cursor may differ
    assert differing_pixels(seen, truth[2]) <= 0.01 * width * height


def test_nova_xvpvnc_url_through_its_nodes_front_port(region):
    """Nova's xvpvnc URL for node 2 names the front door's xvpvnc port for node 2; the xvp
    viewer's CONNECT there reaches node 2's guest."""
    node = region.node(2)
    status, body = api.call(f"{node.api_url}/v2.1/servers/{node.vnc_instance}/remote-consoles",
                            "POST", {"remote_console": {"protocol": "vnc", "type": "xvpvnc"}},
                            key=node.key)
    url = urlsplit(body["remote_console"]["url"])
    assert (url.hostname, url.port) == (region.front, node.front_xvpvnc_port)
    response, pipe = xvp_connect(region.front, node.front_xvpvnc_port, f"/console?{url.query}")
    try:
        assert response.split(b"\r\n")[0].split()[1] == b"200"
        assert RfbViewer(pipe).handshake().name == "QEMU (region-node2)"
    finally:
        pipe.sock.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(ignore_https_errors=True)  # the test's own certificate
    page = context.new_page()
    yield page
    context.close()


def test_novnc_from_a_nova_url_in_chromium(region, page, tmp_path):
    """Nova's noVNC URL for node 2 (prefix in the page and in path=) shows node 2's screen,
    pixel for pixel the one its QEMU reports (but for the blinking cursor)."""
    from tests.e2e.test_web_e2e import assert_clean, wait_for_connected_canvas

    node = region.node(2)
    status, body = api.call(f"{node.api_url}/v2.1/servers/{node.vnc_instance}/remote-consoles",
                            "POST", {"remote_console": {"protocol": "vnc", "type": "novnc"}},
                            key=node.key)
    url = body["remote_console"]["url"]
    assert url.startswith(f"{region.base}/n/node2/vnc_auto.html?path="
                          + quote("n/node2/websockify?token=", safe=""))
    log = watch(page)
    page.goto(url)
    wait_for_connected_canvas(page, "#status", "Connected", "canvas")
    for _ in range(10):  # the cursor may blink between the two captures: look again
        width, height, seen = canvas_rgb(page, "canvas")
        truth = read_screendump(node.screendump(tmp_path / "qemu.ppm"))
        assert (width, height) == truth[:2]
        differing = differing_pixels(seen, truth[2])
        if differing <= 0.01 * width * height:
            break
        time.sleep(0.3)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "region-novnc-node2.png"))
    assert lit_pixels(seen) > 0.002 * width * height, "the canvas is blank"
    assert differing <= 0.01 * width * height, \
        f"{differing} of {width * height} pixels differ from node 2's guest screen"
    assert_clean(log, page)


def test_serial_page_on_a_real_guest(region, page):
    """The serial page of node 3 (prefix kept) shows the guest's shell and runs a command."""
    from tests.e2e.test_web_e2e import assert_clean, wait_for_line

    node = region.node(3)
    token = ibm_grant(node, "serial")["access_token"]
    log = watch(page)
    page.goto(f"{region.base}/n/node3/serial.html?token={token}")
    page.wait_for_function("() => document.body.dataset.state === 'open'", timeout=15000)
    page.keyboard.type("echo region-$((6*7))")
    page.keyboard.press("Enter")
    wait_for_line(page, "region-42", exact=True, timeout=20000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "region-serial-node3.png"))
    assert_clean(log, page)


def test_nova_serial_url_through_the_front_door(region):
    """Nova's serial console URL for node 1 (prefix stripped by HAProxy) reaches the guest's
    shell: a command typed in runs there and its output comes back."""
    node = region.node(1)
    status, body = api.call(
        f"{node.api_url}/v2.1/servers/{node.serial_instance}/remote-consoles", "POST",
        {"remote_console": {"protocol": "serial", "type": "serial"}}, key=node.key)
    assert status == 200, body
    url = body["remote_console"]["url"]
    assert url.startswith(f"wss://{region.front}:{region.front_port}/n/node1/?token=")
    ws = front_ws(region, url)
    try:
        ws.send_binary(b"echo nova-$((6*7))\r")
        seen, deadline = b"", time.monotonic() + 20
        while b"nova-42\r\n" not in seen:
            assert time.monotonic() < deadline, seen[-400:]
            seen += ws.recv_data()[1]
    finally:
        ws.close()


def test_a_killed_node_ends_only_its_own_sessions(region):
    """Node 1 killed mid-session: its viewer's connection ends; node 2's session goes on and a
    new console on node 2 opens; HAProxy takes node 1 out (503 for its prefix)."""
    ws1, _ = viewer(region, ibm_grant(region.node(1))["href"])
    ws2, _ = viewer(region, ibm_grant(region.node(2))["href"])
    region.node(1).kill()
    ws1.settimeout(10)
    ended = False
    try:
        while True:
            opcode, _ = ws1.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                ended = True
                break
    except (websocket.WebSocketConnectionClosedException, ConnectionError, PipeClosed):
        ended = True
    assert ended
    # node 2's session still answers a framebuffer update request
    pipe = WebSocketPipe(ws2)
    pipe.send(b"\x03\x00\x00\x00\x00\x00\x00\x10\x00\x10")
    assert pipe.recv()[:1] == b"\x00"
    ws2.close()
    ws3, init = viewer(region, ibm_grant(region.node(2))["href"])
    ws3.close()
    assert init.name == "QEMU (region-node2)"
    deadline = time.monotonic() + 10
    while region.server_states().get(("console_node1", "node1")) != "DOWN":
        assert time.monotonic() < deadline, region.server_states()
        time.sleep(0.2)
    assert status_of(region, "/n/node1/websockify?token=x") == 503


def test_a_drained_node_says_so_and_the_front_door_stops_routing_to_it(region):
    """Draining node 3 as docs/region.md says (HAProxy: state drain; then systemctl stop, here
    SIGTERM): its viewer gets close code 4008 through the front door, HAProxy takes it out,
    node 2 keeps serving."""
    ws, _ = viewer(region, ibm_grant(region.node(3))["href"])
    assert region.admin("set server console_node3/node3 state drain").strip() == ""
    assert region.server_states()[("console_node3", "node3")] == "DRAIN"
    # drained: nothing new reaches node 3, its open session goes on until the node stops
    assert status_of(region, "/n/node3/websockify?token=x") == 503
    pipe = WebSocketPipe(ws)
    pipe.send(b"\x03\x00\x00\x00\x00\x00\x00\x10\x00\x10")
    assert pipe.recv()[:1] == b"\x00"
    region.node(3).kill(signal.SIGTERM)
    ws.settimeout(10)
    code = None
    while code is None:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(frame.data[:2], "big")
    assert code == 4008
    deadline = time.monotonic() + 10
    while region.server_states().get(("console_node3", "node3")) != "DOWN":
        assert time.monotonic() < deadline, region.server_states()
        time.sleep(0.2)
    assert status_of(region, "/n/node3/websockify?token=x") == 503
    ws2, init = viewer(region, ibm_grant(region.node(2))["href"])
    ws2.close()
    assert init.name == "QEMU (region-node2)"
