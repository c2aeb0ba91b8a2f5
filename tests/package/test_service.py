"""
The installed service, started exactly as its systemd unit starts it, as the consoleproxy user:
it reaches libvirt through group libvirt, grants a token for a real guest whose screen opens
through it, and on SIGTERM closes the open console with 4008 (service stopping) and exits.
The tests run in file order and share one service process (the last one stops it).
"""

import grp
import json
import os
import pwd
import shlex
import signal
import urllib.request

import websocket

from tests.support import api
from tests.support.viewer import RfbViewer, WebSocketPipe, close_status, open_websocket

ISSUED = []


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


def test_healthz_reports_libvirt_connected(service):
    """/healthz answers 200 with libvirt connected: the service user reaches libvirtd."""
    with urllib.request.urlopen(f"{service.api_url}/healthz", timeout=10) as r:
        assert r.status == 200
        body = json.loads(r.read())
    assert body["status"] == "ok" and body["libvirt"] == "connected"


def test_runs_as_the_unit_says(service, unit):
    """The process is ExecStart's twistd3 on Debian's python3, as consoleproxy, unprivileged."""
    user = pwd.getpwnam("consoleproxy")
    status = proc_status(service.pid)
    assert set(status["Uid"]) == {str(user.pw_uid)}
    assert set(status["Gid"]) == {str(user.pw_gid)}
    assert str(grp.getgrnam("libvirt").gr_gid) in status["Groups"]
    assert status["NoNewPrivs"] == ["1"]
    assert int(status["CapBnd"][0], 16) == 0 and int(status["CapEff"][0], 16) == 0
    with open(f"/proc/{service.pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    assert argv[0] == "/usr/bin/python3"  # twistd3's interpreter line
    assert argv[1:] == shlex.split(unit["Service"]["ExecStart"][-1])
    assert os.readlink(f"/proc/{service.pid}/cwd") == "/var/lib/consoleproxy"
    with open(f"/proc/{service.pid}/environ", "rb") as f:
        assert b"PYTHONPATH" not in f.read()
    # LimitNOFILE (65536): room for about 30,000 VNC sessions, not the default soft limit's 500.
    assert unit["Service"]["LimitNOFILE"] == ["65536"]
    assert _open_files_limit(service.pid) == service.nofile_limit() > 1024


def _open_files_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open files limit")


def test_web_clients_are_served_from_the_package(service):
    """noVNC's pages (Debian's novnc) and the serial page with the packaged xterm.js answer 200."""
    base = service.ws_url.replace("ws://", "http://")
    for path in ("/vnc.html", "/vnc_lite.html", "/serial.html", "/xterm/xterm.mjs"):
        with urllib.request.urlopen(base + path, timeout=10) as r:
            assert r.status == 200, path
            assert r.read(), path


def test_token_grant_opens_a_real_guest(service, guest, api_key):
    """A token granted with the installed API key opens the guest's screen through the service."""
    status, body = api.grant(service.api_url, api_key, guest.name)
    assert status == 200, body
    ISSUED.append(body["access_token"])
    assert body["href"].startswith(f"{service.ws_url}/v1/instances/{guest.uuid}/console?access_token=")
    ws = open_websocket(body["href"])
    init = RfbViewer(WebSocketPipe(ws)).handshake((3, 8))
    assert init.name == f"QEMU ({guest.name})"
    ws.close()
    status, _ = api.grant(service.api_url, "not-the-installed-key-0123456789", guest.name)
    assert status == 401


def test_sigterm_closes_the_console_with_service_stopping(service, guest, api_key):
    """SIGTERM: the open console gets close 4008, the service exits cleanly, no secret in its log."""
    status, body = api.grant(service.api_url, api_key, guest.name)
    assert status == 200, body
    ISSUED.append(body["access_token"])
    ws = open_websocket(body["href"])
    RfbViewer(WebSocketPipe(ws)).handshake((3, 8))

    os.kill(service.pid, signal.SIGTERM)
    ws.settimeout(20)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
    assert close_status(data) == (4008, "service stopping")
    # twistd ends itself with the signal that stopped it: systemd counts that as a clean stop
    assert service.stop() in (0, -signal.SIGTERM)
    log = service.log()
    assert "Server Shut Down." in log
    for secret in ISSUED + [api_key, guest.vnc_password]:
        assert secret not in log
