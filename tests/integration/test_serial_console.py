"""
The serial console path in one process over real sockets: token API -> WebSocket -> hub ->
PtySource -> a real PTY with a fake shell on the guest side (FakeHypervisor.open_console). The
e2e suite does the same against a busybox guest under libvirt.
"""

import json
import socket
import threading
import time

import pytest_twisted
from twisted.internet import reactor, threads
from twisted.logger import globalLogPublisher

from tests.support import api
from tests.support.serialclient import SerialClient
from tests.support.viewer import open_websocket
from vncproxy.closecodes import CloseCode
from vncproxy.hypervisor import DomainState
from vncproxy.web.errors import error_message

in_thread = threads.deferToThread
PROMPT = b"[ser1 /]# "


def attach(proxy, **body):
    return SerialClient(proxy.href(proxy.granted("ser1", "serial", **body)))


def ws_status(url):
    import websocket

    try:
        open_websocket(url).close()
    except websocket.WebSocketBadStatusException as e:
        return e.status_code
    return 101


def wait_for_log(proxy, needle, instance="ser1", timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        status, log = api.call(f"{proxy.api_url}/v1/instances/{instance}/console_log",
                               key=proxy.key)
        if needle in log:
            return log
        assert time.monotonic() < deadline, f"{needle!r} not in the log: {log[-200:]!r}"
        time.sleep(0.05)


def on_reactor(f, *args):
    return threads.blockingCallFromThread(reactor, f, *args)


@pytest_twisted.inlineCallbacks
def test_attach_shows_recent_output_then_echoes_what_is_typed(proxy, serial_guest):
    """A viewer first sees what the guest printed before anyone attached, then types a command
    and reads the answer."""
    def scenario():
        serial_guest.shell.prints(b"Linux version 6.1\r\n" + PROMPT)
        # The service reads the console whether or not anyone is attached.
        wait_for_log(proxy, PROMPT)
        body = proxy.granted("ser1", "serial")
        client = SerialClient(proxy.href(body))
        out = client.read_until(PROMPT)
        assert out == b"Linux version 6.1\r\n" + PROMPT
        mark = len(client.received)
        client.type(b"echo hello-serial\r")
        client.read_until(b"hello-serial\r\n" + PROMPT, since=mark)
        client.disconnect()
        return body
    body = yield in_thread(scenario)
    assert set(body) == {"access_token", "console_type", "created_at", "expires_at", "force",
                         "href"}
    assert body["console_type"] == "serial"
    assert body["href"].startswith(f"{proxy.service.ctx.config.websocket_base_url}/v1/instances/"
                                   f"{serial_guest.uuid}/console?access_token=")


@pytest_twisted.inlineCallbacks
def test_text_frames_are_taken_as_their_utf8_bytes(proxy, serial_guest):
    """websocat's default text frames reach the guest as their UTF-8 bytes."""
    def scenario():
        client = attach(proxy)
        client.type_text("echo grüße\r")
        client.read_until("grüße\r\n".encode())
        client.disconnect()
    yield in_thread(scenario)
    assert "echo grüße\r".encode() in bytes(serial_guest.shell.typed)


@pytest_twisted.inlineCallbacks
def test_second_interactive_session_is_refused_and_force_takes_over(proxy, serial_guest):
    """While one interactive session is attached, a token without force is refused (409 at the
    API, 409 at the WebSocket); a forced one closes the first with 4004 and types from then on."""
    def scenario():
        spare = proxy.granted("ser1", "serial")  # minted while nobody is attached
        first = attach(proxy)
        status, body = api.grant(proxy.api_url, proxy.key, "ser1", "serial")
        refused_at_connect = ws_status(proxy.href(spare))
        second = attach(proxy, force=True)
        closed = first.wait_closed()
        second.type(b"echo mine-now\r")
        second.read_until(b"mine-now\r\n")
        second.disconnect()
        return status, body, refused_at_connect, closed
    status, body, refused_at_connect, closed = yield in_thread(scenario)
    assert status == 409 and "in use" in error_message(body)[1]
    assert body["errors"][0]["close_code"] == CloseCode.LIMIT_REACHED  # as the WebSocket says
    assert refused_at_connect == 409
    assert closed == (CloseCode.TAKEN_OVER, "taken over: another session took the console over")


@pytest_twisted.inlineCallbacks
def test_read_only_viewers_watch_but_cannot_type(proxy, serial_guest):
    """Read-only viewers are admitted next to the writer, see its output, and their input never
    reaches the guest."""
    def scenario():
        writer = attach(proxy)
        watchers = [attach(proxy, read_only=True) for _ in range(3)]
        for watcher in watchers:
            watcher.type(b"echo from-watcher\r")
            watcher.type_text("\x1b[24;80R")
        writer.type(b"echo from-writer\r")
        for client in [writer] + watchers:
            client.read_until(b"from-writer\r\n" + PROMPT)
        for client in [writer] + watchers:
            client.disconnect()
    yield in_thread(scenario)
    assert b"from-watcher" not in bytes(serial_guest.shell.typed)
    assert b"\x1b[24;80R" not in bytes(serial_guest.shell.typed)
    assert b"echo from-writer\r" in bytes(serial_guest.shell.typed)


@pytest_twisted.inlineCallbacks
def test_grant_reports_read_only(proxy, serial_guest):
    """A read-only grant says so in its response (for VNC too: view-only sessions); read_only
    must be a boolean."""
    def scenario():
        ok = proxy.granted("ser1", "serial", read_only=True)
        bad_type = api.grant(proxy.api_url, proxy.key, "ser1", "serial", read_only="yes")
        for_vnc = api.grant(proxy.api_url, proxy.key, "vm1", "vnc", read_only=True)
        return ok, bad_type, for_vnc
    ok, bad_type, for_vnc = yield in_thread(scenario)
    assert ok["read_only"] is True
    assert bad_type[0] == 400
    assert for_vnc[0] == 200 and for_vnc[1]["read_only"] is True


@pytest_twisted.inlineCallbacks
def test_viewer_limit(proxy, serial_guest):
    """Beyond max_viewers, grants get 409."""
    proxy.service.ctx.serial.hub(serial_guest.uuid).max_viewers = 2

    def scenario():
        clients = [attach(proxy, read_only=True) for _ in range(2)]
        status, body = api.grant(proxy.api_url, proxy.key, "ser1", "serial", read_only=True)
        for c in clients:
            c.disconnect()
        return status, body
    status, body = yield in_thread(scenario)
    assert status == 409 and "limit" in error_message(body)[1]


@pytest_twisted.inlineCallbacks
def test_power_off_closes_every_session_and_keeps_the_log(proxy, serial_guest):
    """When the instance stops, writer and viewers close with 4007; the log stays readable."""
    def scenario():
        serial_guest.shell.prints(b"last words before power-off\r\n")
        writer, watcher = attach(proxy), attach(proxy, read_only=True)
        watcher.read_until(b"last words")
        on_reactor(proxy.hypervisor.set_state, "ser1", DomainState.SHUTOFF)
        return writer.wait_closed(), watcher.wait_closed(), api.call(
            f"{proxy.api_url}/v1/instances/ser1/console_log", key=proxy.key)
    writer_close, watcher_close, (status, log) = yield in_thread(scenario)
    assert writer_close == watcher_close == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    assert status == 200 and b"last words before power-off" in log
    assert proxy.service.ctx.sessions.sessions() == []


@pytest_twisted.inlineCallbacks
def test_stopped_instance_gets_no_serial_token(proxy, serial_guest):
    """A stopped instance gets 409; an instance without a serial console too."""
    proxy.hypervisor.set_state("ser1", DomainState.SHUTOFF)

    def scenario():
        return (api.grant(proxy.api_url, proxy.key, "ser1", "serial"),
                api.grant(proxy.api_url, proxy.key, "vm1", "serial"))
    stopped, no_serial = yield in_thread(scenario)
    assert stopped[0] == 409 and "not running" in error_message(stopped[1])[1]
    assert no_serial[0] == 409 and "no serial console" in error_message(no_serial[1])[1]


@pytest_twisted.inlineCallbacks
def test_console_log_api(proxy, serial_guest):
    """GET returns the raw log (all or the last N bytes), DELETE clears it; the LXD shape
    returns the same; bad input and unknown instances get JSON errors."""
    def scenario():
        serial_guest.shell.prints(b"boot message one\r\nboot message two\r\n")
        base = f"{proxy.api_url}/v1/instances"
        results = {
            "whole": (200, wait_for_log(proxy, b"two\r\n")),
            "tail": api.call(f"{base}/{serial_guest.uuid}/console_log?tail=18", key=proxy.key),
            "lxd": api.call(f"{proxy.api_url}/1.0/instances/ser1/console", key=proxy.key),
            "bad_tail": api.call(f"{base}/ser1/console_log?tail=-5", key=proxy.key),
            "odd_tail": api.call(f"{base}/ser1/console_log?tail=%C2%B2", key=proxy.key),
            "huge_tail": api.call(f"{base}/ser1/console_log?tail=" + "9" * 5000, key=proxy.key),
            "unknown": api.call(f"{base}/nosuch/console_log", key=proxy.key),
            "no_key": api.call(f"{base}/ser1/console_log"),
            "delete": api.call(f"{base}/ser1/console_log", "DELETE", key=proxy.key),
            "after": api.call(f"{base}/ser1/console_log", key=proxy.key),
        }
        serial_guest.shell.prints(b"new output\r\n")
        results["again"] = (200, wait_for_log(proxy, b"new output\r\n"))
        results["lxd_delete"] = api.call(f"{proxy.api_url}/1.0/instances/ser1/console",
                                         "DELETE", key=proxy.key)
        return results
    r = yield in_thread(scenario)
    assert r["whole"] == (200, b"boot message one\r\nboot message two\r\n")
    assert r["tail"] == (200, b"boot message two\r\n")
    assert r["lxd"] == r["whole"]
    assert r["bad_tail"][0] == r["odd_tail"][0] == r["huge_tail"][0] == 400
    assert r["unknown"][0] == 404
    assert r["no_key"][0] == 401
    assert r["delete"] == (204, b"")
    assert r["after"] == (200, b"")
    assert r["again"] == (200, b"new output\r\n")
    assert r["lxd_delete"][0] == 200 and r["lxd_delete"][1]["status"] == "Success"


@pytest_twisted.inlineCallbacks
def test_clearing_the_log_also_clears_the_scrollback(proxy, serial_guest):
    """After DELETE, a new viewer does not get the cleared output as scrollback."""
    def scenario():
        serial_guest.shell.prints(b"password: hunter2\r\n")
        first = attach(proxy, read_only=True)
        first.read_until(b"hunter2")
        first.disconnect()
        api.call(f"{proxy.api_url}/v1/instances/ser1/console_log", "DELETE", key=proxy.key)
        return attach(proxy, read_only=True).read_for(0.5)
    out = yield in_thread(scenario)
    assert b"hunter2" not in out


@pytest_twisted.inlineCallbacks
def test_no_token_in_the_logs(proxy, serial_guest):
    """Serial grants and sessions are audited (grant, connect, close) with their grant id,
    never the token."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        def scenario():
            body = proxy.granted("ser1", "serial")
            client = SerialClient(proxy.href(body))
            client.type(b"echo x\r")
            client.read_until(b"x\r\n")
            client.disconnect()
            return body["access_token"]
        token = yield in_thread(scenario)
        yield in_thread(time.sleep, 0.2)
    finally:
        globalLogPublisher.removeObserver(events.append)
    audits = {(e.get("audit"), e.get("console_type")) for e in events}
    assert {("grant", "serial"), ("connect", "serial"), ("close", "serial")} <= audits
    assert token not in repr(events)


@pytest_twisted.inlineCallbacks
def test_viewer_disconnect_frees_the_writer_slot(proxy, serial_guest):
    """When the writer goes away, a new interactive token is granted without force."""
    def scenario():
        attach(proxy).disconnect()
        for _ in range(50):
            status, _ = api.grant(proxy.api_url, proxy.key, "ser1", "serial")
            if status == 200:
                return status
            time.sleep(0.05)
        return status
    assert (yield in_thread(scenario)) == 200


@pytest_twisted.inlineCallbacks
def test_slow_viewer_is_disconnected_and_nobody_else_loses_a_byte(proxy, serial_guest):
    """A viewer that stops reading is closed with 4013 once it lags past its queue for the
    grace period, while a reading viewer and the log get every byte the guest printed. (A
    viewer that reads nothing cannot read the close frame either: after the close handshake
    timeout its connection is simply dropped; the service logs the code.)"""
    hub = proxy.service.ctx.serial.hub(serial_guest.uuid)
    hub.queue_limit, hub.grace = 64 * 1024, 0.3
    printed = b"".join(b"%07d........................................................\r\n" % i
                       for i in range(100_000))  # 6.4 MB: more than any socket buffers
    events = []
    globalLogPublisher.addObserver(events.append)

    def scenario():
        slow = attach(proxy, read_only=True)
        slow.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        fast = attach(proxy)
        mark = len(fast.received)
        done = threading.Event()

        def read_fast():
            fast.read_until(printed[-66:], timeout=120, since=mark)
            done.set()

        reader = threading.Thread(target=read_fast, daemon=True)
        reader.start()
        serial_guest.shell.prints(printed)
        reader.join(120)
        fast.disconnect()
        slow.wait_closed(timeout=30)
        return done.is_set(), bytes(fast.received[mark:])
    try:
        finished, got = yield in_thread(scenario)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert finished and got == printed
    codes = [e.get("code") for e in events if e.get("audit") == "close"]
    assert CloseCode.SLOW_VIEWER in codes
    log = proxy.service.ctx.serial.log(serial_guest.uuid).tail()
    assert len(log) >= 1024 * 1024 and printed.endswith(log[-len(printed):])


@pytest_twisted.inlineCallbacks
def test_nova_style_path_with_a_serial_token(proxy, serial_guest):
    """A serial token minted straight from the TokenStore (as Nova's os-getSerialConsole and
    remote-consoles handlers do) opens the console at /?token=T."""
    secret, _ = proxy.service.ctx.tokens.mint(serial_guest.uuid, "serial",
                                              instance_name=serial_guest.name)

    def scenario():
        client = SerialClient(f"{proxy.ws_url}/?token={secret}")
        client.type(b"echo via-nova-path\r")
        client.read_until(b"via-nova-path\r\n")
        client.disconnect()
    yield in_thread(scenario)


@pytest_twisted.inlineCallbacks
def test_idle_serial_session_times_out(make_proxy, add_serial_guest):
    """A serial session without traffic either way for idle_timeout closes with 4005."""
    proxy = make_proxy(idle_timeout=0.5)
    add_serial_guest(proxy)

    def scenario():
        client = attach(proxy)
        return client.wait_closed(timeout=5)
    assert (yield in_thread(scenario)) == (CloseCode.IDLE_TIMEOUT, "idle timeout")


@pytest_twisted.inlineCallbacks
def test_dropped_serial_session_resumes_within_the_grace(proxy, serial_guest):
    """A serial session whose connection drops (no close frame) can be reopened with the same
    token within the reconnect grace; one closed by the user cannot."""
    def scenario():
        body = proxy.granted("ser1", "serial")
        url = proxy.href(body)
        first = SerialClient(url)
        first.ws.sock.close()  # the network drops: no close frame
        time.sleep(0.3)
        again = SerialClient(url)
        again.type(b"echo resumed\r")
        again.read_until(b"resumed\r\n")
        again.disconnect()  # a clean close by the user
        time.sleep(0.3)
        return ws_status(url)
    assert (yield in_thread(scenario)) == 401


@pytest_twisted.inlineCallbacks
def test_nova_serial_consoles(proxy, serial_guest):
    """remote-consoles with protocol serial and os-getSerialConsole hand out ws://…/?token=
    URLs that open the serial console."""
    def scenario():
        base = f"{proxy.api_url}/v2.1/servers/ser1"
        status, remote = api.call(f"{base}/remote-consoles", "POST", {
            "remote_console": {"protocol": "serial", "type": "serial"}}, key=proxy.key)
        assert status == 200, remote
        client = SerialClient(remote["remote_console"]["url"].replace(
            proxy.service.ctx.config.websocket_base_url, proxy.ws_url))
        client.type(b"echo via-remote-consoles\r")
        client.read_until(b"via-remote-consoles\r\n")
        busy = api.call(f"{base}/action", "POST", {"os-getSerialConsole": {"type": "serial"}},
                        key=proxy.key)
        client.disconnect()
        time.sleep(0.2)
        status, action = api.call(f"{base}/action", "POST",
                                  {"os-getSerialConsole": {"type": "serial"}}, key=proxy.key)
        return busy, status, action
    busy, status, action = yield in_thread(scenario)
    assert busy[0] == 409
    assert status == 200 and action["console"]["url"].startswith(
        proxy.service.ctx.config.websocket_base_url + "/?token=")


@pytest_twisted.inlineCallbacks
def test_busy_refusal_names_its_close_code(proxy, serial_guest):
    """Refused at the WebSocket because the console is in use: 409 with close code 4003 in the
    JSON body."""
    import websocket

    def scenario():
        spare = proxy.granted("ser1", "serial")
        writer = attach(proxy)
        try:
            open_websocket(proxy.href(spare)).close()
        except websocket.WebSocketBadStatusException as e:
            return e.status_code, json.loads(e.resp_body)
        finally:
            writer.disconnect()
    status, body = yield in_thread(scenario)
    assert status == 409
    assert body["errors"][0]["close_code"] == CloseCode.LIMIT_REACHED


@pytest_twisted.inlineCallbacks
def test_metrics_count_serial_sessions_and_capture(proxy, serial_guest):
    """/metrics shows open serial sessions and the bytes captured from the console."""
    def scenario():
        serial_guest.shell.prints(b"some boot output\r\n")
        wait_for_log(proxy, b"boot output")
        client = attach(proxy, read_only=True)
        client.read_until(b"boot output")
        status, text = api.call(f"{proxy.api_url}/metrics")
        client.disconnect()
        return text.decode()
    text = yield in_thread(scenario)
    assert 'consoleproxy_sessions{console_type="serial"} 1.0' in text
    captured = [line for line in text.splitlines()
                if line.startswith("consoleproxy_serial_bytes_captured_total")]
    assert captured and float(captured[0].split()[-1]) >= len(b"some boot output\r\n")
