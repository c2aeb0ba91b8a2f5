"""
End to end, real service, real guest: the operator lists the sessions of a VM (a VNC viewer on
the WebSocket listener, one on the xvpvnc port, a serial viewer), ends one (its viewer sees
4014), and sends console actions that the guest's kernel acknowledges on its serial console:
Alt+SysRq+S ("sysrq: Emergency Sync") and an NMI ("NMI received for unknown reason"); in
Chromium, the serial page's menu sends SysRq for the interactive holder, never a read-only
viewer; following the console log delivers a line typed later; noVNC on a read_only token
types into the VM's screen and the guest never sees it, while an interactive session's typing
runs, and the noVNC page's menu sends SysRq for the interactive holder, never a read-only
viewer; with graphics-fd (the default) the console opens while QEMU's VNC password is unknown to
the service.
"""

import http.client
import secrets
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.service import ServiceProcess
from tests.e2e.test_web_e2e import nova_url, wait_for_connected_canvas
from tests.support import api
from tests.support.browser import wait_for_line, watch
from tests.support.serialclient import SerialClient
from tests.support.viewer import (
    PipeClosed,
    RfbRefused,
    RfbViewer,
    WebSocketPipe,
    open_websocket,
    xvp_connect,
)
from vncproxy.closecodes import CloseCode

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def service(vnc_guest, tmp_path_factory):
    proc = ServiceProcess(tmp_path_factory.mktemp("operator"), serial__domains=vnc_guest.name)
    proc.start()
    yield proc
    proc.stop()


def grant(service, guest, console_type="vnc", **body):
    status, response = api.grant(service.api_url, service.key, guest.name, console_type, **body)
    assert status == 200, response
    return response


def sessions(service, guest):
    status, body = api.call(f"{service.api_url}/v1/instances/{guest.uuid}/console_sessions",
                            key=service.key)
    assert status == 200, body
    return body["sessions"]


def action(service, guest, body):
    return api.call(f"{service.api_url}/v1/instances/{guest.name}/console_actions", "POST",
                    body, key=service.key)


def test_sessions_are_listed_and_one_is_ended_with_4014(service, vnc_guest):
    """Three sessions of three kinds are listed; DELETE ends the WebSocket VNC one (its viewer
    gets 4014), the others go on."""
    ws_viewer = RfbViewer(WebSocketPipe(open_websocket(grant(service, vnc_guest)["href"])))
    assert ws_viewer.handshake().name == f"QEMU ({vnc_guest.name})"
    token = grant(service, vnc_guest)["access_token"]
    response, pipe = xvp_connect("127.0.0.1", service.xvpvnc_port, f"/console?token={token}")
    assert response.startswith(b"HTTP/1.1 200")
    xvp_viewer = RfbViewer(pipe)
    xvp_viewer.handshake()
    serial = SerialClient(grant(service, vnc_guest, "serial", read_only=True)["href"])
    try:
        time.sleep(0.5)
        rows = sessions(service, vnc_guest)
        kinds = sorted((r["console_type"], r["listener"], r["mode"]) for r in rows)
        assert kinds == [("serial", "websocket", "read_only"), ("vnc", "websocket", "interactive"),
                         ("vnc", "xvpvnc", "interactive")]
        assert all(r["client"] == "127.0.0.1" and r["state"] == "open" for r in rows)
        target = next(r for r in rows if r["listener"] == "websocket" and r["console_type"] == "vnc")
        status, _ = api.call(f"{service.api_url}/v1/instances/{vnc_guest.name}/console_sessions/"
                             f"{target['id']}", "DELETE", key=service.key)
        assert status == 204
        with pytest.raises(PipeClosed) as closed:
            while True:
                ws_viewer.framebuffer_update(incremental=True)
        assert closed.value.args[0] == (CloseCode.ENDED_BY_OPERATOR, "ended by operator")
        xvp_viewer.framebuffer_update(incremental=False)  # still served
        assert target["id"] not in [r["id"] for r in sessions(service, vnc_guest)]
        assert len(sessions(service, vnc_guest)) == 2
    finally:
        serial.disconnect()
        pipe.close()


def test_sysrq_reaches_the_guest_kernel(service, vnc_guest):
    """Alt+SysRq+S through virDomainSendKey: the kernel prints its acknowledgement."""
    since = vnc_guest.serial_offset()
    status, body = action(service, vnc_guest, {"action": "sysrq", "key": "s"})
    assert status == 202, body
    vnc_guest.wait_for_serial(b"sysrq: Emergency Sync", timeout=30, since=since)


def test_nmi_reaches_the_guest_kernel(service, vnc_guest):
    """virDomainInjectNMI: the kernel logs the NMI it cannot attribute to any source."""
    since = vnc_guest.serial_offset()
    status, body = action(service, vnc_guest, {"action": "nmi"})
    assert status == 202, body
    vnc_guest.wait_for_serial(b"NMI received for unknown reason", timeout=30, since=since)


def test_send_keys_types_on_the_guest_console(service, vnc_guest):
    """send-keys presses the named keys together on the VM's keyboard: Alt+SysRq+H spelled as
    Linux key names makes the kernel print its SysRq help."""
    since = vnc_guest.serial_offset()
    status, body = action(service, vnc_guest, {"action": "send-keys",
                                               "keys": ["KEY_LEFTALT", "KEY_SYSRQ", "KEY_H"]})
    assert status == 202, body
    vnc_guest.wait_for_serial(b"sysrq: HELP", timeout=30, since=since)


def _serial_page(browser, service, token):
    context = browser.new_context(viewport={"width": 1024, "height": 600})
    page = context.new_page()
    log = watch(page)
    page.goto(f"http://127.0.0.1:{service.console_port}/serial.html?token={token}")
    page.wait_for_function("() => document.body.dataset.state === 'open'", timeout=15000)
    return context, page, log


def _read_only_menu_refused(page, vnc_guest):
    """A read-only page's menu says why SysRq was not sent, and the guest sees none (3 s);
    @return: the guest's serial offset from before, for the interactive page's check."""
    since = vnc_guest.serial_offset()
    said = _send_from_menu(page, "SysRq: help (h)")
    assert said == "Not sent: a read-only session cannot send console actions"
    time.sleep(3)
    assert b"sysrq: HELP" not in vnc_guest.serial_output(since)
    return since


def _send_from_menu(page, label):
    page.click("#actions summary")
    page.click(f"#actions button:has-text('{label}')")
    page.wait_for_function(
        "() => /^(Sent|Not sent)/.test(document.getElementById('action-status').textContent)",
        timeout=15000)
    return page.inner_text("#action-status")


def test_serial_page_menu_sends_sysrq_for_the_writer_only(service, vnc_guest, browser):
    """In Chromium, the serial page's "Send…" menu of a read-only viewer is refused and the
    kernel prints nothing; the interactive holder's page sends Alt+SysRq+H and both terminals
    show the kernel's SysRq help."""
    watcher = grant(service, vnc_guest, "serial", read_only=True)["access_token"]
    writer = grant(service, vnc_guest, "serial")["access_token"]
    ro_context, ro_page, ro_log = _serial_page(browser, service, watcher)
    rw_context, rw_page, rw_log = _serial_page(browser, service, writer)
    try:
        since = _read_only_menu_refused(ro_page, vnc_guest)
        assert _send_from_menu(rw_page, "SysRq: help (h)") == "Sent SysRq: help (h)"
        vnc_guest.wait_for_serial(b"sysrq: HELP", timeout=30, since=since)
        wait_for_line(rw_page, "sysrq: HELP", timeout=15000)
        wait_for_line(ro_page, "sysrq: HELP", timeout=15000)
        ARTIFACTS.mkdir(exist_ok=True)
        rw_page.screenshot(path=str(ARTIFACTS / "serial-page-sysrq-menu.png"))
        for log, page in ((ro_log, ro_page), (rw_log, rw_page)):
            # the read-only page's refused POST shows as a failed resource load, nothing else
            assert [p for p in log.problems(page) if "403" not in p] == []
    finally:
        ro_context.close()
        rw_context.close()


def test_follow_delivers_a_line_typed_later(service, vnc_guest):
    """GET console_log?follow=true&tail=...: a command typed afterwards on the serial console
    comes through the open response as the guest prints its output."""
    parts = urlsplit(service.api_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", f"/v1/instances/{vnc_guest.uuid}/console_log?follow=true&tail=0",
                 headers={"X-Auth-Token": service.key})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("transfer-encoding") == "chunked"
    writer = SerialClient(grant(service, vnc_guest, "serial", force=True)["href"])
    try:
        writer.type(b"echo follow-$((6*7))\r")
        got = b""
        deadline = time.monotonic() + 30
        while b"follow-42\r\n" not in got:
            assert time.monotonic() < deadline, got[-300:]
            got += response.read1(65536)
        assert b"echo follow-$((6*7))" in got  # the echo of the typing, then its output
    finally:
        writer.disconnect()
        conn.close()


def _novnc_page(browser, service, guest, token):
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    log = watch(page)
    page.goto(nova_url(f"http://127.0.0.1:{service.console_port}", token))
    wait_for_connected_canvas(page, "#status", f"Connected to QEMU ({guest.name})",
                              "#screen canvas")
    return context, page, log


def _echo_to_serial(page, word):
    """Type `echo WORD > /dev/ttyS0` and Enter on the VM's screen. Shift is pressed for '>'
    itself: QEMU maps key codes, and a '>' without Shift down arrives as '.' (docs/qemu-facts.md)."""
    page.click("#screen canvas")
    page.keyboard.type(f"echo {word} ", delay=30)
    page.keyboard.press("Shift+Period")
    page.keyboard.type(" /dev/ttyS0", delay=30)
    page.keyboard.press("Enter")


def test_view_only_novnc_types_and_the_guest_never_sees_it(service, vnc_guest, browser):
    """In Chromium, noVNC on a read_only token types a command into the VM's screen (its shell
    on tty1): it never runs; the same typed on an interactive token runs (its output reaches
    the serial log)."""
    status, ro = api.grant(service.api_url, service.key, vnc_guest.name, "vnc", read_only=True)
    assert status == 200 and ro["read_only"] is True, ro
    since = vnc_guest.serial_offset()
    context, page, log = _novnc_page(browser, service, vnc_guest, ro["access_token"])
    try:
        _echo_to_serial(page, "view-only-typed")
        time.sleep(4)
        row = next(r for r in sessions(service, vnc_guest) if r["mode"] == "read_only")
        assert row["bytes_from_viewer"] > 0  # the keys left the browser...
        page.screenshot(path=str(ARTIFACTS / "novnc-view-only-typed.png"))
    finally:
        context.close()
    assert b"view-only-typed" not in vnc_guest.serial_output(since)  # ...and never ran
    context, page, log = _novnc_page(browser, service, vnc_guest,
                                     grant(service, vnc_guest)["access_token"])
    try:
        _echo_to_serial(page, "interactive-typed")
        vnc_guest.wait_for_serial(b"interactive-typed", timeout=30, since=since)
        page.screenshot(path=str(ARTIFACTS / "novnc-interactive-typed.png"))
    finally:
        context.close()
    assert b"view-only-typed" not in vnc_guest.serial_output(since)


def test_novnc_page_menu_sends_sysrq_for_the_interactive_holder_only(service, vnc_guest, browser):
    """In Chromium, the noVNC page of the URL the API hands out (vnc_auto.html) has the "Send…"
    menu: on a read_only token it says why it was refused and the kernel prints nothing; on an
    interactive token it sends Alt+SysRq+H and the kernel prints its SysRq help."""
    watcher = grant(service, vnc_guest, read_only=True)["access_token"]
    ro_context, ro_page, ro_log = _novnc_page(browser, service, vnc_guest, watcher)
    rw_context, rw_page, rw_log = _novnc_page(browser, service, vnc_guest,
                                              grant(service, vnc_guest)["access_token"])
    try:
        since = _read_only_menu_refused(ro_page, vnc_guest)
        ARTIFACTS.mkdir(exist_ok=True)
        ro_page.screenshot(path=str(ARTIFACTS / "novnc-page-menu-refused.png"))
        assert _send_from_menu(rw_page, "SysRq: help (h)") == "Sent SysRq: help (h)"
        vnc_guest.wait_for_serial(b"sysrq: HELP", timeout=30, since=since)
        rw_page.screenshot(path=str(ARTIFACTS / "novnc-page-menu-sysrq.png"))
        assert rw_page.text_content("#status") == f"Connected to QEMU ({vnc_guest.name})"
        for log, page in ((ro_log, ro_page), (rw_log, rw_page)):
            # the read-only page's refused POST shows as a failed resource load, nothing else
            assert [p for p in log.problems(page) if "403" not in p] == []
        assert any("403" in p for p in ro_log.problems(ro_page))
    finally:
        ro_context.close()
        rw_context.close()


def _set_vnc_password(guest, password):
    """Change the password QEMU's VNC server checks, behind libvirt's back (its XML keeps the
    old one), as if it were a secret the service has no way to read."""
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", "qemu-monitor-command", guest.name,
                    "--hmp", f"set_password vnc {password}"], check=True, capture_output=True)


def test_graphics_fd_works_with_the_vnc_password_unknown(service, vnc_guest, tmp_path_factory):
    """The service (default [vnc] connect = graphics-fd) opens the console while QEMU's VNC
    password is one that appears nowhere, not even in libvirt's XML; a tcp-mode service, which
    reads the password from the XML, cannot."""
    tcp = ServiceProcess(tmp_path_factory.mktemp("operator-tcp"), vnc__connect="tcp").start()
    _set_vnc_password(vnc_guest, secrets.token_hex(4))
    try:
        viewer = RfbViewer(WebSocketPipe(open_websocket(grant(service, vnc_guest)["href"])))
        assert viewer.handshake().name == f"QEMU ({vnc_guest.name})"
        assert len(viewer.framebuffer_update()) > 0
        viewer.pipe.close()
        status, body = api.grant(tcp.api_url, tcp.key, vnc_guest.name, "vnc")
        assert status == 200, body
        with pytest.raises(RfbRefused, match="(?i)auth"):
            RfbViewer(WebSocketPipe(open_websocket(body["href"]))).handshake()
    finally:
        _set_vnc_password(vnc_guest, vnc_guest.vnc_password)
        tcp.stop()
    assert "connecting over tcp" not in service.log()
    assert "secret1" not in service.log()
