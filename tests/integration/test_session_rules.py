"""
Session rules: refusals carry JSON bodies with close codes, timers close sessions, dropped
sessions resume within the grace, failing sources are slowed then refused, metrics and audit
events account for it all, and the OpenAPI document matches the routes.

On the memory tier (L{tests.support.memory}): the service runs on a memory clock, viewers are
Autobahn's in-memory WebSocket client, and time passes by advancing the clock, never by
sleeping. The console listener's real-socket tests are in test_vnc_console.py.
"""

from twisted.logger import globalLogPublisher

from vncproxy.closecodes import CloseCode
from vncproxy.web.api import load_openapi


def new_href(proxy):
    return proxy.href(proxy.granted())


def open_viewer(proxy, url):
    """A WebSocket viewer on C{url}, past the RFB handshake."""
    viewer = proxy.open_websocket(url)
    proxy.rfb_handshake(viewer)
    return viewer


def test_refusals_carry_json_with_close_codes(memory_proxy):
    """
    Refusals carry the close code in the format of the URL's family: Nova's fault for the
    noVNC path Nova hands out, IBM's errors for the IBM href.
    """
    proxy = memory_proxy
    bad = proxy.refusal(f"{proxy.ws_url}/websockify?token=bogus")
    origin = proxy.refusal(new_href(proxy), origin="https://evil.example")
    assert bad == (401, {"unauthorized": {"code": 401, "message": "token invalid",
                                          "close_code": 4001}})
    assert origin[0] == 403
    assert origin[1]["errors"] == [{"code": "forbidden", "message": "origin refused",
                                    "more_info": "/openapi.json", "close_code": 4002}]


def test_third_session_refused_with_limit_close_code(memory_proxy):
    """A token minted before two sessions opened is refused at connect with 409 / 4003."""
    proxy = memory_proxy
    late = new_href(proxy)
    held = [open_viewer(proxy, new_href(proxy)) for _ in range(2)]
    status, body = proxy.refusal(late)
    for viewer in held:
        viewer.sendClose()
    assert status == 409
    assert body["errors"][0]["close_code"] == CloseCode.LIMIT_REACHED


def test_idle_session_is_closed_with_4005(make_memory_proxy):
    """With no traffic for idle_timeout, the session closes with code 4005."""
    proxy = make_memory_proxy(idle_timeout=0.6)
    viewer = open_viewer(proxy, new_href(proxy))
    proxy.advance(0.3)
    assert viewer.closed is None
    proxy.advance(4.7)
    assert viewer.closed == (CloseCode.IDLE_TIMEOUT, "idle timeout")


def test_traffic_keeps_a_session_open_until_max_session(make_memory_proxy):
    """A busy session outlives idle_timeout but closes at max_session with 4006."""
    proxy = make_memory_proxy(idle_timeout=0.5, max_session=1.5)
    viewer = open_viewer(proxy, new_href(proxy))
    t0 = proxy.reactor.seconds()
    while viewer.closed is None and proxy.reactor.seconds() - t0 < 60:
        proxy.framebuffer_update(viewer)
        proxy.advance(0.1)
    assert viewer.closed[0] == CloseCode.SESSION_TOO_LONG
    assert proxy.reactor.seconds() - t0 > 1.0


def test_dropped_session_resumes_with_the_same_token(memory_proxy):
    """A connection dropped without a close can be reopened with its token once; a closed one cannot."""
    proxy = memory_proxy
    url = new_href(proxy)
    viewer = open_viewer(proxy, url)
    viewer.transport.loseConnection()  # the network drops: no close frame
    proxy.advance(0.3)
    again = proxy.open_websocket(url)
    name = proxy.rfb_handshake(again).name
    again.sendClose()  # a deliberate close: the token is now dead
    proxy.advance(0.3)
    assert name == "fake vm"
    assert proxy.refusal(url)[0] == 401


def test_bad_token_burst_is_slowed_then_refused(make_memory_proxy):
    """Repeated bad tokens from one address are answered ever later, then refused with 429."""
    proxy = make_memory_proxy(ratelimit_slow_after=2, ratelimit_refuse_after=5)
    timings = []
    for _ in range(6):
        t0 = proxy.reactor.seconds()
        status, body = proxy.refusal(f"{proxy.ws_url}/websockify?token=guess")
        timings.append((status, proxy.reactor.seconds() - t0))
    good = proxy.refusal(new_href(proxy))
    assert [s for s, _ in timings] == [401, 401, 401, 401, 401, 429]
    assert timings[0][1] < 0.2 and timings[1][1] < 0.2
    assert timings[4][1] > timings[2][1] >= 0.2
    assert good[0] == 429  # even a valid token is not heard from that address for a while


def test_metrics_count_sessions_tokens_and_refusals(memory_proxy):
    """/metrics shows tokens issued and consumed, refusals by reason and bytes relayed."""
    proxy = memory_proxy
    viewer = open_viewer(proxy, new_href(proxy))
    assert proxy.framebuffer_update(viewer)
    proxy.refusal(f"{proxy.ws_url}/websockify?token=bogus")
    status, text = proxy.call("/metrics")
    viewer.sendClose()
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


def test_audit_events_for_grant_connect_refusal_close(memory_proxy):
    """One audit event per grant, connect, refusal and close, with the fields operators need."""
    proxy = memory_proxy
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        viewer = open_viewer(proxy, new_href(proxy))
        proxy.framebuffer_update(viewer)
        viewer.sendClose()
        proxy.network.flush()
        proxy.refusal(f"{proxy.ws_url}/websockify?token=bogus")
        proxy.advance(0.3)
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


def test_openapi_document_matches_the_routes(memory_proxy):
    """/openapi.json serves the repository's document, and it lists exactly the routes the API has."""
    proxy = memory_proxy
    status, served = proxy.call("/openapi.json")
    document = load_openapi()
    assert status == 200 and served == document
    resource = proxy.service.getServiceNamed("api").factory.resource
    routes = {(template, method.lower()) for method, template, _, _ in resource.routes}
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routes == documented
    for method, template, _, needs_key in resource.routes:
        operation = document["paths"][template][method.lower()]
        assert (operation["security"] != []) == needs_key
