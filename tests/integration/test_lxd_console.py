"""
The LXD console API in one process over real sockets (token API listener, our API key), with
the fake hypervisor and a fake shell on a real PTY: the session rules of serial consoles hold
for an LXD console (one writer, force, read-only viewers untouched, power-off, idle timer,
secret lifetime), and /1.0/events reports each operation's end to its caller only. The e2e
suite drives the real lxc and pylxd.
"""

import json
import time

import pytest
import pytest_twisted
import websocket
from twisted.internet import threads

from tests.integration.test_serial_console import attach, on_reactor
from tests.support import api
from tests.support.serialclient import SerialClient
from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import DomainState

in_thread = threads.deferToThread


def ws_base(proxy):
    return proxy.api_url.replace("http", "ws")


def lxd_console(proxy, force=False, key=None):
    status, body = api.call(f"{proxy.api_url}/1.0/instances/ser1/console", "POST",
                            {"type": "console", "width": 80, "height": 24, "force": force},
                            key=key or proxy.key)
    assert status == 202, body
    return body["metadata"]


def open_channels(proxy, operation):
    fds = operation["metadata"]["fds"]
    base = f"{ws_base(proxy)}/1.0/operations/{operation['id']}/websocket?secret="
    control = websocket.create_connection(base + fds["control"], timeout=10,
                                          suppress_origin=True)
    return control, SerialClient(base + fds["0"])


def operation_state(proxy, operation):
    status, body = api.call(f"{proxy.api_url}/1.0/operations/{operation['id']}", key=proxy.key)
    assert status == 200, body
    return body["metadata"]["status"], body["metadata"]["err"]


def events(proxy, key=None):
    return websocket.create_connection(f"{ws_base(proxy)}/1.0/events?type=operation",
                                       timeout=10, suppress_origin=True,
                                       header=[f"Authorization: Bearer {key or proxy.key}"])


def next_event(stream):
    message = json.loads(stream.recv())
    assert message["type"] == "operation"
    return message["metadata"]


@pytest_twisted.inlineCallbacks
def test_lxd_console_is_the_interactive_session_and_viewers_stay(proxy, serial_guest):
    """An LXD console gets the scrollback and types; a read-only viewer watches it; a forced
    LXD console takes over (the first gets 4004 and its operation fails), the viewer is
    untouched; closing the control channel detaches (operation Success, seen on the event
    stream, which never carries the secrets)."""
    def scenario():
        serial_guest.shell.prints(b"before lxd\r\n")
        stream = events(proxy)
        watcher = attach(proxy, read_only=True)
        first_op = lxd_console(proxy)
        created = next_event(stream)
        control, first = open_channels(proxy, first_op)
        first.read_until(b"before lxd")
        first.type(b"echo from-lxd\r")
        watcher.read_until(b"from-lxd\r\n")
        busy = api.call(f"{proxy.api_url}/1.0/instances/ser1/console", "POST",
                        {"type": "console"}, key=proxy.key)
        second_op = lxd_console(proxy, force=True)
        control2, second = open_channels(proxy, second_op)
        first_closed = first.wait_closed()
        first_state = operation_state(proxy, first_op)
        second.type(b"echo forced\r")
        watcher.read_until(b"forced\r\n")
        control2.close()
        second_closed = second.wait_closed()
        seen = [next_event(stream) for _ in range(3)]  # second created, first failed, second done
        stream.close()
        return (created, busy, first_closed, first_state, second_closed,
                operation_state(proxy, second_op), seen, watcher)
    created, busy, first_closed, first_state, second_closed, second_state, seen, watcher = \
        yield in_thread(scenario)
    assert created["status"] == "Running" and created["metadata"] == {}
    assert busy[0] == 409 and busy[1]["type"] == "error"
    assert busy[1]["error"].startswith("This console is already connected. Force is required")
    assert first_closed == (CloseCode.TAKEN_OVER, "taken over: another session took the console over")
    assert first_state[0] == "Failure" and "taken over" in first_state[1]
    assert second_closed == (1000, "Detaching from console")
    assert second_state == ("Success", "")
    assert [e["status"] for e in seen] == ["Running", "Failure", "Success"]
    assert all(e["metadata"] == {} for e in seen)
    assert watcher.close is None  # the read-only viewer never noticed
    watcher.disconnect()


@pytest_twisted.inlineCallbacks
def test_power_off_closes_the_lxd_console(proxy, serial_guest):
    """When the instance stops, the console channel closes with 4007 and the operation fails
    with the reason; the log keeps what was typed."""
    def scenario():
        operation = lxd_console(proxy)
        control, data = open_channels(proxy, operation)
        data.type(b"echo typed-in-lxd\r")
        data.read_until(b"typed-in-lxd\r\n")
        on_reactor(proxy.hypervisor.set_state, "ser1", DomainState.SHUTOFF)
        closed = data.wait_closed()
        log = api.call(f"{proxy.api_url}/1.0/instances/ser1/console", key=proxy.key)
        return closed, operation_state(proxy, operation), log
    closed, state, (status, log) = yield in_thread(scenario)
    assert closed == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    assert state == ("Failure", "instance stopped")
    assert status == 200 and b"typed-in-lxd" in log
    assert proxy.service.ctx.sessions.sessions() == []


@pytest.mark.parametrize("setting, code, words", [
    ({"idle_timeout": 0.5}, CloseCode.IDLE_TIMEOUT, "idle"),
    ({"max_session": 0.5}, CloseCode.SESSION_TOO_LONG, "too long"),
])
@pytest_twisted.inlineCallbacks
def test_session_timers_close_the_lxd_console(make_proxy, add_serial_guest, setting, code, words):
    """The idle and maximum-length timers close an LXD console like any other session."""
    proxy = make_proxy(**setting)
    add_serial_guest(proxy)

    def scenario():
        operation = lxd_console(proxy)
        control, data = open_channels(proxy, operation)
        if "max_session" in setting:
            data.type(b"echo busy\r")  # traffic: only the maximum length can end it
        return data.wait_closed(), operation_state(proxy, operation)
    closed, state = yield in_thread(scenario)
    assert closed[0] == code
    assert state[0] == "Failure" and words in state[1]


@pytest_twisted.inlineCallbacks
def test_unused_secrets_expire_with_the_operation(make_proxy, add_serial_guest):
    """Secrets live as long as a console token: after token_ttl the operation fails and its
    secrets are refused (403)."""
    proxy = make_proxy(token_ttl=0.3)
    add_serial_guest(proxy)

    def scenario():
        operation = lxd_console(proxy)
        time.sleep(0.6)
        fds = operation["metadata"]["fds"]
        try:
            websocket.create_connection(
                f"{ws_base(proxy)}/1.0/operations/{operation['id']}/websocket?secret="
                + fds["0"], timeout=10, suppress_origin=True)
        except websocket.WebSocketBadStatusException as e:
            refused = e.status_code
        return refused, operation_state(proxy, operation)
    refused, state = yield in_thread(scenario)
    assert refused == 403
    assert state == ("Failure", "timed out waiting for the console WebSocket")


@pytest_twisted.inlineCallbacks
def test_lxd_errors_are_lxd_envelopes(proxy, serial_guest):
    """Bad requests and unknown things answer in LXD's error envelope; the event stream and
    the routes need the key; GET /1.0 tells an unknown caller it is untrusted."""
    def scenario():
        base = f"{proxy.api_url}/1.0"
        results = {
            "vga": api.call(f"{base}/instances/ser1/console", "POST", {"type": "vga"},
                            key=proxy.key),
            "odd_type": api.call(f"{base}/instances/ser1/console", "POST", {"type": "x"},
                                 key=proxy.key),
            "not_json": api.call(f"{base}/instances/ser1/console", "POST", raw=b"{",
                                 key=proxy.key),
            "unknown": api.call(f"{base}/instances/nosuch", key=proxy.key),
            "stopped": api.call(f"{base}/instances/off1/console", "POST", {}, key=proxy.key),
            "no_key": api.call(f"{base}/instances/ser1"),
            "no_op": api.call(f"{base}/operations/nosuch", key=proxy.key),
            "untrusted": api.call(base),
            "trusted": api.call(base, key=proxy.key),
            "instance": api.call(f"{base}/instances/ser1", key=proxy.key),
        }
        try:
            events(proxy, key="wrong-key-0123456789")
        except websocket.WebSocketBadStatusException as e:
            results["events_wrong_key"] = e.status_code
        return results
    r = yield in_thread(scenario)
    assert r["vga"][0] == 400 and "VNC" in r["vga"][1]["error"]
    assert r["vga"][1]["type"] == "error" and r["vga"][1]["error_code"] == 400
    assert r["odd_type"][0] == r["not_json"][0] == 400
    assert r["unknown"][0] == 404 and r["unknown"][1]["type"] == "error"
    assert r["stopped"][0] == 400 and r["stopped"][1]["error"] == "Instance is not running"
    assert r["no_key"][0] == 401 and r["no_key"][1]["error"] == "not authorized"
    assert r["no_op"][0] == 404
    assert r["untrusted"][1]["metadata"]["auth"] == "untrusted"
    trusted = r["trusted"][1]["metadata"]
    assert trusted["auth"] == "trusted" and "tls" in trusted["auth_methods"]
    assert {"instances", "console"} <= set(trusted["api_extensions"])
    assert r["instance"][1]["metadata"]["status"] == "Running"
    assert r["events_wrong_key"] == 401
