"""
The LXD routes and WebSocket refusals of the API listener, on a memory transport and clock
(the fuzz harness's service: FakeHypervisor, vm1 without a serial console).
"""

import json

from tests.fuzz.http_targets import KEY, exchange, world

UPGRADE = (b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n")


def request(raw):
    w = world()
    written = exchange(w.api, raw, w.clock)
    head, _, body = written.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        chunks, rest = [], body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            if int(size, 16) == 0:
                break
            chunks.append(rest[:int(size, 16)])
            rest = rest[int(size, 16) + 2:]
        body = b"".join(chunks)
    return status, head, json.loads(body) if body.strip().startswith(b"{") else body


def test_server_document_for_anyone_routes_for_key_holders():
    """GET /1.0 tells a caller without a key it is untrusted; the other routes refuse it with
    LXD's error envelope and a Bearer challenge."""
    status, _, body = request(b"GET /1.0 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and body["type"] == "sync" and body["metadata"]["auth"] == "untrusted"
    status, _, body = request(b"GET /1.0 HTTP/1.1\r\nAuthorization: Bearer " + KEY.encode()
                              + b"\r\n\r\n")
    assert body["metadata"]["auth"] == "trusted"
    status, head, body = request(b"GET /1.0/instances/vm1 HTTP/1.1\r\n\r\n")
    assert status == 401 and b"www-authenticate: bearer" in head.lower()
    assert body == {"type": "error", "status": "", "status_code": 0, "operation": "",
                    "error_code": 401, "error": "not authorized", "metadata": None}


def test_console_requests_are_checked():
    """vga names the VNC console; a domain without a serial console is 409; a wrong method is
    405; an unknown route 404 — all in LXD's envelope."""
    key = b"X-Auth-Token: " + KEY.encode() + b"\r\n"

    def post(body):
        return request(b"POST /1.0/instances/vm1/console HTTP/1.1\r\n" + key
                       + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    status, _, body = post(b'{"type": "vga"}')
    assert status == 400 and "VNC" in body["error"] and "console_access_token" in body["error"]
    status, _, body = post(b'{"type": "console", "force": "yes"}')
    assert status == 400 and body["error"] == "force must be true or false"
    status, _, body = post(b'{"type": "console"}')
    assert status == 409 and "no serial console" in body["error"]
    status, head, body = request(b"PUT /1.0/instances/vm1/console HTTP/1.1\r\n" + key + b"\r\n")
    assert status == 405 and body["type"] == "error"
    status, _, body = request(b"GET /1.0/containers HTTP/1.1\r\n" + key + b"\r\n")
    assert status == 404 and body["error"] == "not found"
    status, _, body = request(b"GET /1.0/events HTTP/1.1\r\n" + key + b"\r\n")
    assert status == 400 and "WebSocket" in body["error"]


def test_websocket_refusals_are_envelopes_without_secrets():
    """The event stream without a key is 401; an operation WebSocket with a secret that opens
    nothing is 403; neither answer repeats what was sent."""
    status, _, body = request(UPGRADE % (b"/1.0/events", b""))
    assert status == 401 and body["error"] == "not authorized"
    secret = b"5ec12e7" * 9
    status, head, body = request(UPGRADE % (b"/1.0/operations/x/websocket?secret=" + secret, b""))
    assert status == 403 and body["error"] == "not authorized"
    assert body["close_code"] == 4001  # counted and reported as an invalid token
    assert b"x-request-id:" in head.lower()
    assert secret not in head and secret not in json.dumps(body).encode()
    status, _, body = request(UPGRADE % (b"/1.0/events", b"Origin: https://evil.example\r\n"
                                         b"X-Auth-Token: " + KEY.encode() + b"\r\n"))
    assert status == 403
