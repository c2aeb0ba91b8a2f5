"""
One node of a region behind a front door: URLs under the node's public prefix (stripped or kept
by the front door), the front door's xvpvnc port, and signed grants redeemed on the console and
xvpvnc listeners, with the same refusal as a bad token.
"""

import base64
import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_twisted
import websocket
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet import threads

from tests.support import api
from tests.support.viewer import RfbViewer, WebSocketPipe, open_websocket, xvp_connect
from vncproxy.grants import sign

in_thread = threads.deferToThread
VM = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"
PUBLIC = "https://front.example.com/n/node1"
ISSUER = Ed25519PrivateKey.generate()
ISSUER_B64 = base64.b64encode(
    ISSUER.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def refusal(url):
    """(HTTP status, close code) of a refused upgrade; None if it opened."""
    try:
        open_websocket(url).close()
    except websocket.WebSocketBadStatusException as e:
        try:  # the refusal in the path's API family (IBM, Nova): its body but its trace id
            body = json.loads(e.resp_body)
            body.pop("trace", None)
            return e.status_code, body
        except ValueError:
            return e.status_code, None
    return None


def opens(url):
    ws = open_websocket(url)
    try:
        return RfbViewer(WebSocketPipe(ws)).handshake().name
    finally:
        ws.close()


def local(proxy, public_url, keep_prefix):
    """The URL the front door forwards to for C{public_url}: on the node, prefix kept or not."""
    parts = urlsplit(public_url)
    path = parts.path if keep_prefix else parts.path[len("/n/node1"):]
    return f"{proxy.ws_url}{path}" + (f"?{parts.query}" if parts.query else "")


@pytest.mark.parametrize("mode", ["stripped", "kept"])
@pytest_twisted.inlineCallbacks
def test_ibm_and_nova_urls_open_behind_either_front_door(make_proxy, mode):
    """The IBM href and the Nova noVNC and serial-shaped URLs name the prefix; the node answers
    them whether the front door strips the prefix or keeps it."""
    proxy = make_proxy(public_url=PUBLIC, public_prefix_mode=mode)
    keep = mode == "kept"

    def scenario():
        status, body = api.grant(proxy.api_url, proxy.key, VM)
        assert status == 200, body
        assert body["href"].startswith(f"wss://front.example.com/n/node1/v1/instances/{VM}/")
        assert opens(local(proxy, body["href"].replace("wss:", "https:"), keep)) == "fake vm"
        status, body = api.call(f"{proxy.api_url}/v2.1/servers/{VM}/remote-consoles", "POST",
                                {"remote_console": {"protocol": "vnc", "type": "novnc"}},
                                key=proxy.key)
        url = body["remote_console"]["url"]
        assert url.startswith(f"{PUBLIC}/vnc_auto.html?path=")
        path = parse_qs(urlsplit(url).query)["path"][0]  # noVNC: resolved against the host
        assert path.startswith("n/node1/websockify?token=")
        assert opens(local(proxy, "https://front.example.com/" + path, keep)) == "fake vm"

    yield in_thread(scenario)


@pytest_twisted.inlineCallbacks
def test_kept_prefix_serves_nothing_outside_it(make_proxy):
    """With the prefix kept, paths without it (or under another node's) are 404."""
    proxy = make_proxy(public_url=PUBLIC, public_prefix_mode="kept")

    def scenario():
        status, body = api.grant(proxy.api_url, proxy.key, VM)
        token = body["access_token"]
        for path in (f"/v1/instances/{VM}/console", f"/n/node2/v1/instances/{VM}/console",
                     f"/n/node1x/v1/instances/{VM}/console"):
            assert refusal(f"{proxy.ws_url}{path}?access_token={token}")[0] == 404
        # ... and the token was not spent by those attempts
        assert opens(f"{proxy.ws_url}/n/node1/v1/instances/{VM}/console"
                     f"?access_token={token}") == "fake vm"

    yield in_thread(scenario)


@pytest_twisted.inlineCallbacks
def test_xvpvnc_urls_name_the_front_doors_port(make_proxy):
    """[console] public_xvpvnc_port and public_vnc_port: the xvpvnc and vnc:// URLs name the
    front door's ports for this node, on the public host."""
    proxy = make_proxy(public_url=PUBLIC, public_xvpvnc_port=15901, public_vnc_port=16401)
    status, body = yield in_thread(api.grant, proxy.api_url, proxy.key, VM)
    assert body["vnc_url"] == f"vnc://:{body['password']}@front.example.com:16401"
    status, body = yield in_thread(
        api.call, f"{proxy.api_url}/v2.1/servers/{VM}/remote-consoles", "POST",
        {"remote_console": {"protocol": "vnc", "type": "xvpvnc"}}, key=proxy.key)
    assert body["remote_console"]["url"].startswith("http://front.example.com:15901/console?")


def grant_for(node="node1", nonce=None, ttl=60, console_type="vnc", inst=VM, key=ISSUER):
    now = int(time.time())
    return sign(key, {"v": 1, "node": node, "inst": inst, "type": console_type,
                      "force": False, "ro": False, "iat": now, "exp": now + ttl,
                      "nonce": nonce or base64.urlsafe_b64encode(
                          Ed25519PrivateKey.generate().public_key().public_bytes(
                              Encoding.Raw, PublicFormat.Raw)[:18]).decode()})


@pytest_twisted.inlineCallbacks
def test_signed_grant_opens_once_and_is_refused_like_a_bad_token(make_proxy):
    """A grant from a trusted issuer for this node opens the console once, on any console path;
    replayed, for another node, or from an unknown key: the bad token's 401 and close code."""
    proxy = make_proxy(node_id="node1", trusted_issuers=(ISSUER_B64,), reconnect_grace=0.0)

    def scenario():
        bad = refusal(f"{proxy.ws_url}/websockify?token=not-a-token")
        assert bad[0] == 401
        g = grant_for()
        assert opens(f"{proxy.ws_url}/v1/instances/{VM}/console?access_token={g}") == "fake vm"
        assert refusal(f"{proxy.ws_url}/websockify?token={g}") == bad
        assert refusal(f"{proxy.ws_url}/websockify?token={grant_for(node='node2')}") == bad
        stranger = grant_for(key=Ed25519PrivateKey.generate())
        assert refusal(f"{proxy.ws_url}/websockify?token={stranger}") == bad
        assert refusal(f"{proxy.ws_url}/websockify?token={grant_for(ttl=-40)}") == bad
        # the path's instance must match, as for our own tokens
        other = grant_for(inst="00000000-0000-0000-0000-000000000000")
        ibm = f"{proxy.ws_url}/v1/instances/{VM}/console?access_token="
        assert refusal(ibm + other) == refusal(ibm + "not-a-token")
        assert opens(f"{proxy.ws_url}/websockify?token={grant_for()}") == "fake vm"

    yield in_thread(scenario)


@pytest_twisted.inlineCallbacks
def test_signed_grant_on_the_xvpvnc_listener(make_proxy):
    """The xvp viewer's CONNECT takes a signed grant as its token, once."""
    proxy = make_proxy(node_id="node1", trusted_issuers=(ISSUER_B64,))

    def scenario():
        g = grant_for()
        response, pipe = xvp_connect("127.0.0.1", proxy.xvpvnc_port, f"/console?token={g}")
        assert response.split(b"\r\n")[0].split()[1] == b"200"
        pipe.sock.close()
        response, pipe = xvp_connect("127.0.0.1", proxy.xvpvnc_port, f"/console?token={g}")
        assert response.split(b"\r\n")[0].split()[1] == b"401"
        pipe.sock.close()

    yield in_thread(scenario)
