"""
Session rules over real sockets: refusals carry JSON bodies with close codes, timers close
sessions, dropped sessions resume within the grace, failing sources are slowed then refused,
metrics and audit events account for it all, and the OpenAPI document matches the routes.
"""

import json
import socket
import time

import pytest_twisted
import websocket
from twisted.internet import threads
from twisted.logger import globalLogPublisher

from tests.support import api
from tests.support.viewer import PipeClosed, RfbViewer, WebSocketPipe, open_websocket
from vncproxy.closecodes import CloseCode
from vncproxy.web.api import load_openapi

in_thread = threads.deferToThread


def href(proxy, body):
    return body["href"].replace(proxy.service.ctx.config.websocket_base_url, proxy.ws_url)


def new_href(proxy):
    status, body = api.grant(proxy.api_url, proxy.key, "vm1")
    assert status == 200, body
    return href(proxy, body)


def refusal(url, **kwargs):
    """(HTTP status, JSON body) of a refused upgrade."""
    try:
        open_websocket(url, **kwargs).close()
    except websocket.WebSocketBadStatusException as e:
        return e.status_code, json.loads(e.resp_body)
    return 101, None


def closed_with(viewer):
    try:
        while True:
            viewer.read(1)
    except PipeClosed as e:
        return e.args[0]


@pytest_twisted.inlineCallbacks
def test_refusals_carry_json_with_close_codes(proxy):
    """
    Refusals carry the close code in the format of the URL's family: Nova's fault for the
    noVNC path Nova hands out, IBM's errors for the IBM href.
    """
    def scenario():
        return (refusal(f"{proxy.ws_url}/websockify?token=bogus"),
                refusal(new_href(proxy), origin="https://evil.example"))
    bad, origin = yield in_thread(scenario)
    assert bad == (401, {"unauthorized": {"code": 401, "message": "token invalid",
                                          "close_code": 4001}})
    assert origin[0] == 403
    assert origin[1]["errors"] == [{"code": "forbidden", "message": "origin refused",
                                    "more_info": "/openapi.json", "close_code": 4002}]


@pytest_twisted.inlineCallbacks
def test_third_session_refused_with_limit_close_code(proxy):
    """A token minted before two sessions opened is refused at connect with 409 / 4003."""
    def scenario():
        late = new_href(proxy)
        held = [open_websocket(new_href(proxy)) for _ in range(2)]
        for ws in held:
            RfbViewer(WebSocketPipe(ws)).handshake()
        result = refusal(late)
        for ws in held:
            ws.close()
        return result
    status, body = yield in_thread(scenario)
    assert status == 409
    assert body["errors"][0]["close_code"] == CloseCode.LIMIT_REACHED


@pytest_twisted.inlineCallbacks
def test_idle_session_is_closed_with_4005(make_proxy):
    """With no traffic for idle_timeout, the session closes with code 4005."""
    proxy = make_proxy(idle_timeout=0.6)

    def scenario():
        viewer = RfbViewer(WebSocketPipe(open_websocket(new_href(proxy))))
        viewer.handshake()
        t0 = time.monotonic()
        code = closed_with(viewer)
        return code, time.monotonic() - t0
    (code, reason), waited = yield in_thread(scenario)
    assert (code, reason) == (CloseCode.IDLE_TIMEOUT, "idle timeout")
    assert 0.3 < waited < 5


@pytest_twisted.inlineCallbacks
def test_traffic_keeps_a_session_open_until_max_session(make_proxy):
    """A busy session outlives idle_timeout but closes at max_session with 4006."""
    proxy = make_proxy(idle_timeout=0.5, max_session=1.5)

    def scenario():
        viewer = RfbViewer(WebSocketPipe(open_websocket(new_href(proxy))))
        viewer.handshake()
        t0 = time.monotonic()
        try:
            while True:
                viewer.framebuffer_update()
                time.sleep(0.1)
        except PipeClosed as e:
            return e.args[0], time.monotonic() - t0
    (code, reason), lasted = yield in_thread(scenario)
    assert code == CloseCode.SESSION_TOO_LONG
    assert lasted > 1.0


@pytest_twisted.inlineCallbacks
def test_dropped_session_resumes_with_the_same_token(proxy):
    """A connection dropped without a close can be reopened with its token once; a closed one cannot."""
    def scenario():
        url = new_href(proxy)
        ws = open_websocket(url)
        RfbViewer(WebSocketPipe(ws)).handshake()
        ws.sock.shutdown(socket.SHUT_RDWR)  # the network drops: no close frame
        ws.sock.close()
        time.sleep(0.3)
        again = open_websocket(url)
        name = RfbViewer(WebSocketPipe(again)).handshake().name
        again.close()  # a deliberate close: the token is now dead
        time.sleep(0.3)
        return name, refusal(url)[0]
    name, after_close = yield in_thread(scenario)
    assert name == "fake vm"
    assert after_close == 401


@pytest_twisted.inlineCallbacks
def test_bad_token_burst_is_slowed_then_refused(make_proxy):
    """Repeated bad tokens from one address are answered ever later, then refused with 429."""
    proxy = make_proxy(ratelimit_slow_after=2, ratelimit_refuse_after=5)

    def scenario():
        timings = []
        for _ in range(6):
            t0 = time.monotonic()
            status, body = refusal(f"{proxy.ws_url}/websockify?token=guess")
            timings.append((status, time.monotonic() - t0))
        good = refusal(new_href(proxy))
        return timings, good
    timings, good = yield in_thread(scenario)
    assert [s for s, _ in timings] == [401, 401, 401, 401, 401, 429]
    assert timings[0][1] < 0.2 and timings[1][1] < 0.2
    assert timings[4][1] > timings[2][1] >= 0.2
    assert good[0] == 429  # even a valid token is not heard from that address for a while


@pytest_twisted.inlineCallbacks
def test_metrics_count_sessions_tokens_and_refusals(proxy):
    """/metrics shows tokens issued and consumed, refusals by reason and bytes relayed."""
    def scenario():
        viewer = RfbViewer(WebSocketPipe(open_websocket(new_href(proxy))))
        viewer.handshake()
        viewer.framebuffer_update()
        refusal(f"{proxy.ws_url}/websockify?token=bogus")
        during = api.call(f"{proxy.api_url}/metrics")
        viewer.pipe.close()
        return during
    status, text = yield in_thread(scenario)
    text = text.decode()
    assert status == 200
    assert 'consoleproxy_sessions{console_type="vnc"} 1.0' in text
    assert 'consoleproxy_tokens_issued_total{console_type="vnc"} 1.0' in text
    assert 'consoleproxy_tokens_consumed_total{console_type="vnc"} 1.0' in text
    assert 'consoleproxy_refusals_total{reason="token_invalid"} 1.0' in text
    assert "consoleproxy_vnc_handshake_seconds_count 1.0" in text
    to_viewer = [line for line in text.splitlines()
                 if line.startswith('consoleproxy_bytes_total{console_type="vnc",direction="to_viewer"}')]
    assert float(to_viewer[0].split()[-1]) > 32 * 16 * 4


@pytest_twisted.inlineCallbacks
def test_audit_events_for_grant_connect_refusal_close(proxy):
    """One audit event per grant, connect, refusal and close, with the fields operators need."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        def scenario():
            ws = open_websocket(new_href(proxy))
            viewer = RfbViewer(WebSocketPipe(ws))
            viewer.handshake()
            viewer.framebuffer_update()
            ws.close()
            refusal(f"{proxy.ws_url}/websockify?token=bogus")
            time.sleep(0.3)
        yield in_thread(scenario)
    finally:
        globalLogPublisher.removeObserver(events.append)
    audits = {e["audit"]: e for e in events if "audit" in e}
    assert set(audits) == {"grant", "connect", "refusal", "close"}
    assert audits["grant"]["caller"].startswith("key-")
    assert audits["connect"]["peer"].startswith("tcp4:127.0.0.1:")
    close = audits["close"]
    assert close["console_type"] == "vnc" and close["instance"] == "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"
    assert close["bytes_to_viewer"] > 0 and close["bytes_from_viewer"] > 0
    assert close["duration"] >= 0 and close["reason"] == "viewer closed"
    assert audits["refusal"]["reason"] == "token invalid, used or expired"  # said once


@pytest_twisted.inlineCallbacks
def test_openapi_document_matches_the_routes(proxy):
    """/openapi.json serves the repository's document, and it lists exactly the routes the API has."""
    status, served = yield in_thread(api.call, f"{proxy.api_url}/openapi.json")
    document = load_openapi()
    assert status == 200 and served == document
    resource = proxy.service.getServiceNamed("api").factory.resource
    routes = {(template, method.lower()) for method, template, _, _ in resource.routes}
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routes == documented
    for method, template, _, needs_key in resource.routes:
        operation = document["paths"][template][method.lower()]
        assert (operation["security"] != []) == needs_key
