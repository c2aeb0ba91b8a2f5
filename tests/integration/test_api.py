"""
The token API over HTTP: authentication, every status code of docs/api.md, JSON errors.

Twisted's HTTP client talks to the service on a memory clock (L{tests.support.memory}); the
last test keeps the API listener honest over a real socket.
"""

import re

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from tests.support import api
from vncproxy.web.errors import error_message

in_thread = threads.deferToThread
VM = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"


def grant_path(instance="vm1"):
    return f"/v1/instances/{instance}/console_access_token"


def test_grant_by_name_and_by_uuid(memory_proxy):
    """An instance is found by name and by UUID in either case; the href names its UUID."""
    results = [memory_proxy.grant(instance) for instance in ("vm1", VM, VM.upper())]
    for status, body in results:
        assert status == 200
        assert f"/v1/instances/{VM}/console?access_token=" in body["href"]
        assert body["console_type"] == "vnc" and body["force"] is False
        assert body["created_at"].endswith("Z") and body["expires_at"] > body["created_at"]


def test_bearer_header_is_accepted(memory_proxy):
    """Authorization: Bearer KEY works like X-Auth-Token."""
    status, _ = memory_proxy.call(grant_path(), "POST", {"console_type": "vnc"},
                                  headers={"Authorization": f"Bearer {memory_proxy.key}"})
    assert status == 200


@pytest.mark.parametrize("headers", [
    {}, {"X-Auth-Token": "wrong-key-wrong-key-wrong"}, {"Authorization": "Basic abc"},
    {"Authorization": "Bearer "}, {"X-Auth-Token": "integration-test-key-012345678"},
])
def test_missing_or_wrong_key_is_401(memory_proxy, headers):
    """No key, a wrong key, a prefix of the key or another scheme get 401 in the JSON error shape."""
    status, body = memory_proxy.call(grant_path(), "POST", {"console_type": "vnc"},
                                     headers=headers)
    assert status == 401
    # IBM's error format, which ibm-cloud-sdk-core turns into ApiException's message
    trace = body.pop("trace")
    assert re.fullmatch(r"[0-9a-f-]{36}", trace)
    assert body == {"errors": [{"code": "not_authorized", "message": "missing or invalid API key",
                                "more_info": "/openapi.json"}], "status_code": 401}


def test_a_refused_api_key_is_audited_without_the_key(memory_proxy):
    """A 401 is an audit refusal like every other one: who, what, why, and never the key."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        wrong = "wrong-key-wrong-key-wrong"
        status, _ = memory_proxy.call(grant_path(), "POST", {"console_type": "vnc"},
                                      headers={"X-Auth-Token": wrong})
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert status == 401
    refusals = [e for e in events if e.get("audit") == "refusal"]
    assert len(refusals) == 1
    refusal = refusals[0]
    assert refusal["console_type"] == "api" and refusal["peer"].startswith("tcp4:127.0.0.1:")
    assert refusal["reason"].startswith("missing or invalid API key: POST /")
    assert refusal["reason"].endswith(": unknown key")
    assert refusal["log_level"] == LogLevel.info
    assert all(wrong not in formatEvent(e) and wrong not in repr(e) for e in events)


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "not valid JSON"),
    (b"", "must be a JSON object"),
    (b"[1, 2]", "must be a JSON object"),
    (b"\xff\xfe", "not valid JSON"),
    (b'{"force": true}', 'console_type must be "vnc" or "serial"'),
    (b'{"console_type": 5}', 'console_type must be "vnc" or "serial"'),
    (b'{"console_type": "spice"}', 'console_type must be "vnc" or "serial"'),
    (b'{"console_type": "vnc", "force": "yes"}', "force must be true or false"),
])
def test_bad_bodies_are_400(memory_proxy, raw, message):
    """Garbage, wrong shapes and wrong types get 400 with a message saying what is wrong."""
    status, body = memory_proxy.call(grant_path(), "POST", raw=raw, key=memory_proxy.key)
    assert status == 400
    assert message in error_message(body)[1]


def test_oversized_body_is_413(memory_proxy):
    """A body over 64 KiB is refused without being parsed."""
    raw = b'{"console_type": "vnc", "pad": "' + b"x" * 70000 + b'"}'
    status, body = memory_proxy.call(grant_path(), "POST", raw=raw, key=memory_proxy.key)
    assert status == 413


def test_unknown_instance_is_404(memory_proxy):
    """A name or UUID no domain has gets 404."""
    status, body = memory_proxy.grant("nosuchvm")
    assert status == 404
    assert body["errors"][0]["code"] == "not_found"
    assert error_message(body) == (404, "instance nosuchvm not found")


def test_stopped_instance_is_409(memory_proxy):
    """A domain that is not running gets 409."""
    status, body = memory_proxy.grant("off1")
    assert status == 409
    assert "not running" in error_message(body)[1]


def test_instance_without_vnc_is_409(memory_proxy):
    """A running domain without VNC graphics gets 409."""
    memory_proxy.hypervisor.add_domain("headless")
    status, body = memory_proxy.grant("headless")
    assert status == 409
    assert "no VNC console" in error_message(body)[1]


def test_unknown_path_is_404_and_wrong_method_405(memory_proxy):
    """Unknown paths get a JSON 404; a known path with the wrong method gets 405 with Allow."""
    results = (memory_proxy.call("/v1/nothing", key=memory_proxy.key),
               memory_proxy.call(grant_path(), "GET", key=memory_proxy.key))
    assert results[0][0] == 404
    assert error_message(results[0][1]) == (404, "no such resource")
    assert results[1][0] == 405


def test_hypervisor_down_is_503(memory_proxy):
    """When libvirt cannot be asked, the grant fails with 503 and healthz says so."""
    memory_proxy.hypervisor.available = False
    grant, health = memory_proxy.grant("vm1"), memory_proxy.call("/healthz")
    assert grant[0] == 503
    assert health == (503, {"status": "degraded", "libvirt": "unreachable"})


@pytest_twisted.inlineCallbacks
def test_healthz_needs_no_key(proxy):
    """/healthz answers without a key and reports libvirt connectivity (over a real socket)."""
    result = yield in_thread(api.call, f"{proxy.api_url}/healthz")
    assert result == (200, {"status": "ok", "libvirt": "connected"})
