"""
The operator's routes: the session inventory lists every session of every kind (WebSocket VNC,
xvpvnc, serial, reconnect-grace reservations), DELETE ends one with 4014 (or cancels a
reservation), console actions reach the hypervisor; all audited with the key id.

Over real sockets where a serial guest (a real PTY) takes part; the reservation and the console
actions on the memory tier (L{tests.support.memory}).
"""

import time

import pytest_twisted
from twisted.internet import threads
from twisted.logger import globalLogPublisher

from tests.support import api
from tests.support.serialclient import SerialClient
from tests.support.viewer import PipeClosed, RfbViewer, WebSocketPipe, open_websocket, xvp_connect
from vncproxy.closecodes import CloseCode

in_thread = threads.deferToThread
VM1 = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"


def sessions(proxy, instance="vm1"):
    status, body = api.call(f"{proxy.api_url}/v1/instances/{instance}/console_sessions",
                            key=proxy.key)
    assert status == 200, body
    return body["sessions"]


def end(proxy, session_id, instance="vm1"):
    return api.call(f"{proxy.api_url}/v1/instances/{instance}/console_sessions/{session_id}",
                    "DELETE", key=proxy.key)


def closed_with(viewer):
    try:
        while True:
            viewer.read(1)
    except PipeClosed as e:
        return e.args[0]


@pytest_twisted.inlineCallbacks
def test_inventory_lists_every_kind_of_session(proxy, serial_guest):
    """A WebSocket VNC viewer, an xvpvnc viewer and a read-only serial viewer are each listed with
    their listener, mode, client address, byte counts and grant id."""
    def scenario():
        ws_grant = proxy.granted()
        ws_viewer = RfbViewer(WebSocketPipe(open_websocket(proxy.href(ws_grant))))
        ws_viewer.handshake()
        ws_viewer.framebuffer_update()
        xvp_grant = proxy.granted()
        response, pipe = xvp_connect("127.0.0.1", proxy.xvpvnc_port,
                                     f"/console?token={xvp_grant['access_token']}")
        assert response.startswith(b"HTTP/1.1 200")
        RfbViewer(pipe).handshake()
        serial_grant = proxy.granted("ser1", "serial", read_only=True)
        serial = SerialClient(proxy.href(serial_grant))
        time.sleep(0.3)
        rows = sessions(proxy) + sessions(proxy, "ser1")
        serial.disconnect()
        pipe.close()
        ws_viewer.pipe.close()
        return rows, {g["access_token"]: g for g in (ws_grant, xvp_grant, serial_grant)}
    rows, grants = yield in_thread(scenario)
    by_listener = {(r["listener"], r["console_type"]): r for r in rows}
    assert set(by_listener) == {("websocket", "vnc"), ("xvpvnc", "vnc"), ("websocket", "serial")}
    ws = by_listener[("websocket", "vnc")]
    assert ws["state"] == "open" and ws["mode"] == "interactive"
    assert ws["client"] == "127.0.0.1"
    assert ws["bytes_to_viewer"] > 32 * 16 * 4 and ws["bytes_from_viewer"] > 0
    assert ws["started_at"].endswith("Z") and ws["last_activity_at"] >= ws["started_at"]
    assert by_listener[("xvpvnc", "vnc")]["client"] == "127.0.0.1"
    assert by_listener[("websocket", "serial")]["mode"] == "read_only"
    assert len({r["id"] for r in rows}) == 3
    assert all(r["grant_id"] for r in rows) and len({r["grant_id"] for r in rows}) == 3


@pytest_twisted.inlineCallbacks
def test_delete_ends_the_session_with_4014_and_is_audited(proxy):
    """DELETE closes the named viewer with 4014 "ended by operator"; the other stays; the session
    leaves the list; an unknown id is 404; audit events name the API key's id."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        def scenario():
            first = RfbViewer(WebSocketPipe(open_websocket(proxy.href(proxy.granted()))))
            first.handshake()
            second = RfbViewer(WebSocketPipe(open_websocket(proxy.href(proxy.granted()))))
            second.handshake()
            victim = sessions(proxy)[0]  # oldest first: the first viewer's
            status, _ = end(proxy, victim["id"])
            code = closed_with(first)
            second.framebuffer_update(incremental=False)  # the other one still works
            after = sessions(proxy)
            unknown = end(proxy, "0123456789ab")
            again = end(proxy, victim["id"])
            return status, code, victim, after, unknown, again
        status, code, victim, after, unknown, again = yield in_thread(scenario)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert status == 204
    assert code == (CloseCode.ENDED_BY_OPERATOR, "ended by operator")
    assert [r["id"] for r in after] != [] and victim["id"] not in [r["id"] for r in after]
    assert unknown[0] == 404 and again[0] == 404
    audits = [e for e in events if e.get("audit") in ("sessions_listed", "session_ended")]
    ended = [e for e in audits if e["audit"] == "session_ended"]
    assert len(ended) == 1 and ended[0]["session_id"] == victim["id"]
    assert ended[0]["grant_id"] == victim["grant_id"] and ended[0]["instance"] == VM1
    assert all(e["caller"].startswith("key-") for e in audits)
    closes = [e for e in events if e.get("audit") == "close" and e.get("code") == 4014]
    assert len(closes) == 1


def test_a_dropped_session_is_listed_as_a_reservation_and_can_be_cancelled(memory_proxy):
    """A viewer whose connection dropped leaves a reconnect-grace reservation in the list;
    DELETE of it makes the token unusable."""
    proxy = memory_proxy
    url = proxy.href(proxy.granted())
    pipe = proxy.websocket_pipe(url)
    RfbViewer(pipe).handshake()
    pipe.viewer.transport.loseConnection()  # the network drops: no close frame
    proxy.advance(0.3)
    status, body = proxy.call("/v1/instances/vm1/console_sessions", key=proxy.key)
    assert status == 200, body
    listed = body["sessions"]
    deleted, _ = proxy.call(f"/v1/instances/vm1/console_sessions/{listed[0]['id']}", "DELETE",
                            key=proxy.key) if listed else (None, None)
    reopened = proxy.refusal(url)[0]
    after = proxy.call("/v1/instances/vm1/console_sessions", key=proxy.key)[1]["sessions"]
    assert [r["state"] for r in listed] == ["reconnect_grace"]
    assert listed[0]["id"].startswith("grace-") and listed[0]["reserved_until"].endswith("Z")
    assert listed[0]["started_at"] is not None
    assert deleted == 204 and reopened == 401 and after == []


def test_console_actions_reach_the_hypervisor(memory_proxy):
    """ctrl-alt-del, sysrq, nmi and send-keys are 202 once the hypervisor took them, as Linux
    key codes; bad bodies are 400, a stopped instance 409, an unknown one 404."""
    proxy = memory_proxy

    def action(body, instance="vm1"):
        return proxy.call(f"/v1/instances/{instance}/console_actions", "POST", body, key=proxy.key)

    bodies = [{"action": "ctrl-alt-del"}, {"action": "sysrq", "key": "s"}, {"action": "nmi"},
              {"action": "send-keys", "keys": ["KEY_LEFTCTRL", "KEY_C"]}]
    answers = [action(b) for b in bodies]
    assert [a[0] for a in answers] == [202] * 4
    assert answers[0][1] == {"action": "ctrl-alt-del", "instance": VM1}
    assert proxy.hypervisor.keys_sent("vm1") == [(29, 56, 111), (56, 99, 31), "nmi", (29, 46)]
    refusals = [action({"action": "reboot"}), action({"action": "sysrq"}),
                action({"action": "send-keys", "keys": ["KEY_NOPE"]}),
                action({"action": "nmi"}, "off1"), action({"action": "nmi"}, "nope")]
    assert [r[0] for r in refusals] == [400, 400, 400, 409, 404]
    assert "KEY_NOPE" in refusals[2][1]["errors"][0]["message"]  # IBM's error format


def page_action(proxy, body, origin=None):
    headers = {"Origin": origin} if origin else {}
    return api.call(f"{proxy.ws_url.replace('ws://', 'http://')}/console_actions", "POST", body,
                    headers=headers)


@pytest_twisted.inlineCallbacks
def test_a_console_page_sends_actions_with_its_own_token_while_its_session_is_open(
        proxy, serial_guest):
    """On the console listener, the token of an open interactive session sends actions; a
    read-only viewer's token, a token without a session, another site's page and a session
    that ended are refused."""
    def scenario():
        writer_grant = proxy.granted("ser1", "serial")
        writer = SerialClient(proxy.href(writer_grant))
        viewer_grant = proxy.granted("ser1", "serial", read_only=True)
        viewer = SerialClient(proxy.href(viewer_grant))
        unused = proxy.granted("ser1", "serial", read_only=True)
        time.sleep(0.3)
        own = f"http://127.0.0.1:{proxy.ws_url.rsplit(':', 1)[1]}"
        answers = {
            "writer": page_action(proxy, {"token": writer_grant["access_token"],
                                          "action": "sysrq", "key": "h"}, origin=own),
            "viewer": page_action(proxy, {"token": viewer_grant["access_token"],
                                          "action": "nmi"}),
            "unopened": page_action(proxy, {"token": unused["access_token"], "action": "nmi"}),
            "bogus": page_action(proxy, {"token": "x" * 43, "action": "nmi"}),
            "elsewhere": page_action(proxy, {"token": writer_grant["access_token"],
                                             "action": "nmi"}, origin="https://evil.example"),
            "bad": page_action(proxy, {"token": writer_grant["access_token"], "action": "x"}),
        }
        writer.disconnect()
        viewer.disconnect()
        time.sleep(0.3)
        answers["ended"] = page_action(proxy, {"token": writer_grant["access_token"],
                                               "action": "nmi"})
        answers["get"] = api.call(f"{proxy.ws_url.replace('ws://', 'http://')}/console_actions")
        return answers
    answers = yield in_thread(scenario)
    assert answers["writer"][0] == 202
    assert proxy.hypervisor.keys_sent("ser1") == [(56, 99, 35)]
    assert answers["viewer"] == (403, {"error": {
        "code": 403, "message": "a read-only session cannot send console actions"}})
    assert answers["unopened"][0] == answers["bogus"][0] == answers["ended"][0] == 401
    assert answers["elsewhere"][0] == 403 and answers["bad"][0] == 400
    assert answers["get"][0] == 405
