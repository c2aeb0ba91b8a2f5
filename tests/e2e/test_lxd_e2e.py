"""
End to end: the real `lxc` (Debian 12's lxd-client, lxc 5.0.2) and pylxd (PyPI, pinned in
setup.py and tools/testbed.sh) against the real service in front of a real busybox guest,
through the LXD console API (docs/api.md, "LXD"): the [lxd] UNIX socket, the [lxd] TLS port with
a client certificate the operator trusts, and /1.0 on the token API with our API key.

The tests run in order on one guest: show-log -> interactive + detach -> busy + takeover ->
TLS certificates -> secrets -> socket permissions -> vga.
"""

import json
import os
import pwd
import shutil
import time
from urllib.parse import urlsplit

import pytest
import requests
import websocket

from tests.e2e.service import ServiceProcess, free_port
from tests.support import api, pki
from tests.support.lxc import LXC, Lxc
from vncproxy.closecodes import CloseCode

READY = b"CONSOLEPROXY-TESTBED-READY"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("consoleproxy-lxd")
    path.chmod(0o755)  # the unprivileged user of the permission test must reach the socket
    return path


@pytest.fixture(scope="module")
def tls_files(workdir):
    ca = pki.make_ca("consoleproxy lxd e2e")
    server = pki.issue(ca, "consoleproxy", names=["localhost", "127.0.0.1"])
    server.write(workdir / "server.crt", workdir / "server.key")
    (workdir / "trust").mkdir()
    return workdir / "server.crt", workdir / "server.key", workdir / "trust"


@pytest.fixture(scope="module")
def service(workdir, serial_guest, tls_files):
    assert os.path.exists(LXC), "lxc (Debian's lxd-client) is not installed: tools/testbed.sh deps"
    cert, key, trust = tls_files
    tls_port = free_port()
    proc = ServiceProcess(
        workdir, serial__domains=serial_guest.name, serial__scrollback=4096,
        lxd__listen=f"unix:{workdir}/lxd.sock", lxd__socket_mode="0660",
        lxd__listen_tls=f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        lxd__trusted_certificates=trust)
    proc.lxd_socket = workdir / "lxd.sock"
    proc.lxd_url = f"https://127.0.0.1:{tls_port}"
    proc.start()
    serial_guest.start(wait=True)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def local(service, workdir):
    """An lxc user whose remote "cp" is the UNIX socket."""
    user = Lxc(workdir / "root-home")
    status, out = user.run("remote", "add", "cp", f"unix://{service.lxd_socket}")
    assert status == 0, out
    return user


def wait_for_log(service, guest, needle, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        status, log = api.call(f"{service.api_url}/1.0/instances/{guest.name}/console",
                               key=service.key)
        assert status == 200, log
        if needle in log:
            return log
        assert time.monotonic() < deadline, f"{needle!r} not in the log: {log[-300:]!r}"
        time.sleep(0.2)


def interact(console, guest, word):
    """Wait for the prompt, type a command, read its echo and output."""
    console.read_until(b"To detach from the console")
    console.read_until(guest.prompt)
    mark = len(console.received)
    console.type(f"echo {word}-$((6*7))\r".encode())
    console.read_until(f"{word}-42\r\n".encode(), since=mark)


def session_is_free(service, guest):
    """Whether a new interactive serial session would be admitted (no writer attached)."""
    status, body = api.grant(service.api_url, service.key, guest.name, "serial")
    return status == 200


def test_show_log_over_the_unix_socket(service, serial_guest, local):
    """`lxc console cp:VM --show-log` prints the boot text the service captured."""
    wait_for_log(service, serial_guest, serial_guest.prompt)
    status, out = local.run("console", f"cp:{serial_guest.name}", "--show-log")
    assert status == 0, out
    assert "Console log:" in out and "Linux version" in out and READY.decode() in out


def test_interactive_console_types_and_detaches(service, serial_guest, local):
    """`lxc console cp:VM` on a terminal: the prompt, a command typed and its answer; ctrl+a q
    detaches, lxc exits 0, the session is gone, and the log has what was typed."""
    console = local.console(f"cp:{serial_guest.name}")
    try:
        interact(console, serial_guest, "lxd-unix")
        assert not session_is_free(service, serial_guest)
        console.detach()
        assert console.wait() == 0, console.received[-300:]
    finally:
        console.close()
    deadline = time.monotonic() + 10
    while not session_is_free(service, serial_guest):
        assert time.monotonic() < deadline, "the session outlived the detach"
        time.sleep(0.2)
    assert b"lxd-unix-42" in wait_for_log(service, serial_guest, b"lxd-unix-42")


def _pylxd_with_key(service):
    import pylxd

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {service.key}"
    return pylxd.Client(endpoint=service.api_url, session=session)


def _attach(base_ws, operation, headers=()):
    fds = operation["metadata"]["fds"]
    path = f"/1.0/operations/{operation['id']}/websocket?secret="
    control = websocket.create_connection(base_ws + path + fds["control"], timeout=20,
                                          suppress_origin=True)
    data = websocket.create_connection(base_ws + path + fds["0"], timeout=20,
                                       suppress_origin=True)
    return control, data


def _read_until(ws, needle, timeout=20):
    got, deadline = b"", time.monotonic() + timeout
    while needle not in got:
        assert time.monotonic() < deadline, got[-300:]
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        opcode, payload = ws.recv_data(control_frame=False)
        assert opcode == websocket.ABNF.OPCODE_BINARY
        got += payload
    return got


def test_second_console_refused_then_force_takes_over(service, serial_guest, local):
    """While `lxc console` is attached a second one is refused with LXD's error; pylxd (our API
    key, "force": true) takes the console over: the first lxc is told and exits, the forced
    session types."""
    first = local.console(f"cp:{serial_guest.name}")
    try:
        interact(first, serial_guest, "first")
        second = local.console(f"cp:{serial_guest.name}")
        try:
            assert second.wait() != 0
        finally:
            second.close()
        assert b"Error: There is already an active console session" in second.received, \
            second.received

        client = _pylxd_with_key(service)
        assert client.host_info["api_version"] == "1.0"
        instance = client.instances.get(serial_guest.name)
        assert instance.status == "Running" and instance.type == "virtual-machine"
        response = client.api.instances[serial_guest.name].console.post(
            json={"type": "console", "width": 80, "height": 24, "force": True})
        assert response.status_code == 202, response.text
        operation = response.json()["metadata"]
        control, data = _attach(service.api_url.replace("http", "ws"), operation)
        assert first.wait() != 0
        assert b"taken over" in first.received, first.received[-300:]
        data.send_binary(b"echo forced-$((1+1))\r")
        _read_until(data, b"forced-2\r\n")
        control.close()
        status, body = api.call(f"{service.api_url}/1.0/operations/{operation['id']}",
                                key=service.key)
        assert status == 200 and body["metadata"]["status"] == "Success", body
        assert "fds" not in body["metadata"]["metadata"]
    finally:
        first.close()
