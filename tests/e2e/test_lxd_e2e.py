"""
End to end: the real `lxc` (Debian 12's lxd-client, lxc 5.0.2) and pylxd (PyPI, pinned in
setup.py and tools/testbed.sh) against the real service in front of a real busybox guest,
through the LXD console API (docs/api.md, "LXD"): the [lxd] UNIX socket, the [lxd] TLS port with
a client certificate the operator trusts, and /1.0 on the token API with our API key.

The tests run in order on one guest: show-log -> interactive + detach -> listed and ended by
the operator -> busy + takeover -> TLS certificates -> secrets -> socket permissions -> vga.
"""

import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import ssl
import tempfile
import time
from pathlib import Path

import pytest
import requests
import websocket

from tests.e2e.service import ServiceProcess, free_port
from tests.support import api, pki
from tests.support.lxc import LXC, Lxc

READY = b"CONSOLEPROXY-TESTBED-READY"


@pytest.fixture(scope="module")
def serial_guest(testbed):
    """A guest of this module's own: the session's serial guest must still be off when
    test_serial_e2e starts it (that module checks the whole boot is captured)."""
    guest = testbed.make_guest(f"cp-e2e-lxd-{os.getpid()}", vnc_password=None, start=False)
    yield guest
    guest.undefine()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("consoleproxy-lxd")


@pytest.fixture(scope="module")
def public_dir():
    """A directory every user may enter (pytest's own is root's only): the socket and the
    unprivileged users' homes live here, so that only the socket's own permissions decide."""
    path = tempfile.mkdtemp(prefix="cp-lxd-e2e-")
    os.chmod(path, 0o755)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_files(workdir):
    ca = pki.make_ca("consoleproxy lxd e2e")
    server = pki.issue(ca, "consoleproxy", names=["localhost", "127.0.0.1"])
    server.write(workdir / "server.crt", workdir / "server.key")
    (workdir / "trust").mkdir()
    return workdir / "server.crt", workdir / "server.key", workdir / "trust"


@pytest.fixture(scope="module")
def service(workdir, public_dir, serial_guest, tls_files):
    assert os.path.exists(LXC), "lxc (Debian's lxd-client) is not installed: tools/testbed.sh deps"
    cert, key, trust = tls_files
    tls_port = free_port()
    proc = ServiceProcess(
        workdir, serial__domains=serial_guest.name, serial__scrollback=4096,
        lxd__listen=f"unix:{public_dir}/lxd.sock", lxd__socket_mode="0660",
        lxd__socket_group="nogroup",
        lxd__listen_tls=f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        lxd__trusted_certificates=trust)
    proc.lxd_socket = public_dir / "lxd.sock"
    proc.lxd_url = f"https://127.0.0.1:{tls_port}"
    proc.start()
    serial_guest.start(wait=True)  # booted after the service runs: its whole boot is captured
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

    import pylxd

    client = pylxd.Client(endpoint=str(service.lxd_socket))  # pylxd on the socket, no key
    assert client.trusted and client.instances.get(serial_guest.name).status == "Running"
    log = client.api.instances[serial_guest.name].console.get()
    assert log.status_code == 200 and READY in log.content


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


def test_operator_lists_and_ends_an_lxc_console(service, serial_guest, local):
    """An open `lxc console` is listed by GET /v1/instances/{instance}/console_sessions (an
    interactive serial session on the "lxd" listener); DELETE of it ends lxc's console, which
    exits with the reason as its error; the audit names the API key for both, and the
    console's close says why."""
    console = local.console(f"cp:{serial_guest.name}")
    try:
        interact(console, serial_guest, "listed")
        status, body = api.call(
            f"{service.api_url}/v1/instances/{serial_guest.name}/console_sessions",
            key=service.key)
        assert status == 200, body
        rows = [r for r in body["sessions"] if r["listener"] == "lxd"]
        assert len(rows) == 1, body
        row = rows[0]
        assert (row["console_type"], row["mode"], row["state"]) == (
            "serial", "interactive", "open"), row
        assert row["bytes_from_viewer"] > 0 and row["bytes_to_viewer"] > 0, row
        status, _ = api.call(f"{service.api_url}/v1/instances/{serial_guest.name}/"
                             f"console_sessions/{row['id']}", "DELETE", key=service.key)
        assert status == 204
        assert console.wait() != 0
        assert b"Error: ended by operator" in console.received, console.received[-300:]
    finally:
        console.close()
    assert session_is_free(service, serial_guest)
    caller = "key-" + hashlib.sha256(service.key.encode()).hexdigest()[:8]
    deadline = time.monotonic() + 10
    ended = (f"{caller} ended serial console session {row['id']} of {serial_guest.uuid} "
             f"(grant {row['grant_id']})")
    closed = re.compile(rf"serial console of {serial_guest.uuid} from \S+ closed after "
                        rf"[0-9.]+s: ended by operator")
    while True:
        log = service.log()
        if ended in log and closed.search(log):
            break
        assert time.monotonic() < deadline, log[-3000:]
        time.sleep(0.2)
    assert f"{caller} listed the " in log and f" console sessions of {serial_guest.uuid}" in log


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
        assert b"Error: This console is already connected. Force is required to take it over" \
            in second.received, \
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
        assert b"Error: taken over: another session took the console over" in first.received, \
            first.received[-300:]
        data.send_binary(b"echo forced-$((1+1))\r")
        _read_until(data, b"forced-2\r\n")
        control.close()
        status, body = api.call(f"{service.api_url}/1.0/operations/{operation['id']}",
                                key=service.key)
        assert status == 200 and body["metadata"]["status"] == "Success", body
        assert "fds" not in body["metadata"]["metadata"]
    finally:
        first.close()


def test_tls_port_trusts_only_the_listed_client_certificates(service, serial_guest, workdir,
                                                             tls_files, monkeypatch):
    """`lxc remote add NAME https://...` with the user's own certificate: refused while the
    operator has not listed it (LXD's untrusted answer), accepted once client.crt is in the
    trust directory (no restart); then --show-log and an interactive console work over TLS.
    Another user's certificate stays refused (403) and the console keeps working."""
    trust = tls_files[2]
    user = Lxc(workdir / "tls-home")
    status, out = user.run("remote", "add", "cptls", service.lxd_url, "--accept-certificate")
    assert status != 0, out  # untrusted: lxc wants a trust password we do not take
    client_crt = os.path.join(user.conf, "client.crt")
    assert os.path.exists(client_crt), out  # lxc made its certificate on the way
    shutil.copy(client_crt, trust / "alice.crt")
    status, out = user.run("remote", "add", "cptls", service.lxd_url, "--accept-certificate")
    assert status == 0, out
    status, out = user.run("console", f"cptls:{serial_guest.name}", "--show-log")
    assert status == 0 and READY.decode() in out, out

    stranger = Lxc(workdir / "stranger-home")
    status, out = stranger.run("remote", "add", "cptls", service.lxd_url,
                               "--accept-certificate")
    assert status != 0, out
    key = os.path.join(stranger.conf, "client.key")
    response = requests.get(f"{service.lxd_url}/1.0/instances/{serial_guest.name}",
                            cert=(os.path.join(stranger.conf, "client.crt"), key),
                            verify=False, timeout=10)
    assert response.status_code == 403
    assert response.json() == {"type": "error", "status": "", "status_code": 0,
                               "operation": "", "error_code": 403, "error": "not authorized",
                               "metadata": None}
    untrusted = requests.get(f"{service.lxd_url}/1.0",
                             cert=(os.path.join(stranger.conf, "client.crt"), key),
                             verify=False, timeout=10).json()
    assert untrusted["metadata"]["auth"] == "untrusted"

    console = user.console(f"cptls:{serial_guest.name}")
    try:
        interact(console, serial_guest, "lxd-tls")
        console.detach()
        assert console.wait() == 0, console.received[-300:]
    finally:
        console.close()

    import pylxd

    # requests lets these override the verify= below (a fresh Debian machine sets neither)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    client = pylxd.Client(endpoint=service.lxd_url,
                          cert=(client_crt, os.path.join(user.conf, "client.key")),
                          verify=os.path.join(user.conf, "servercerts", "cptls.crt"))
    assert client.trusted and client.instances.get(serial_guest.name).status == "Running"

    # Alice's console operation: the stranger's certificate cannot use its secrets, Alice can.
    response = client.api.instances[serial_guest.name].console.post(json={"type": "console"})
    assert response.status_code == 202, response.text
    operation = response.json()["metadata"]
    url = (f"{service.lxd_url.replace('https', 'wss')}/1.0/operations/{operation['id']}"
           f"/websocket?secret={operation['metadata']['fds']['0']}")

    def connect(home):
        conf = os.path.join(home, "lxc")
        return websocket.create_connection(url, timeout=10, suppress_origin=True, sslopt={
            "certfile": os.path.join(conf, "client.crt"),
            "keyfile": os.path.join(conf, "client.key"), "cert_reqs": ssl.CERT_NONE})

    with pytest.raises(websocket.WebSocketBadStatusException) as mismatch:
        connect(stranger.home)
    assert mismatch.value.status_code == 403
    assert json.loads(mismatch.value.resp_body)["error"] == "Requestor mismatch"
    data = connect(user.home)
    data.send_binary(b"echo alice-$((3*3))\r")
    _read_until(data, b"alice-9\r\n")
    data.close()


def test_wrong_secret_is_refused_and_the_right_one_still_works(service, serial_guest):
    """A console operation's WebSocket with a wrong secret gets 403 (LXD's error envelope); the
    right secrets still attach; a secret works once only."""
    status, body = api.call(f"{service.api_url}/1.0/instances/{serial_guest.name}/console",
                            "POST", {"type": "console", "width": 80, "height": 24},
                            key=service.key)
    assert status == 202, body
    operation = body["metadata"]
    assert body["operation"] == f"/1.0/operations/{operation['id']}"
    fds = operation["metadata"]["fds"]
    assert len(fds["0"]) >= 32 and len(fds["control"]) >= 32 and fds["0"] != fds["control"]
    base = service.api_url.replace("http", "ws") + f"/1.0/operations/{operation['id']}"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"{base}/websocket?secret={'0' * 64}", timeout=10,
                                    suppress_origin=True)
    assert refused.value.status_code == 403
    assert json.loads(refused.value.resp_body)["error"] == "not authorized"
    control, data = _attach(service.api_url.replace("http", "ws"), operation)
    with pytest.raises(websocket.WebSocketBadStatusException) as again:
        websocket.create_connection(f"{base}/websocket?secret={fds['0']}", timeout=10,
                                    suppress_origin=True)
    assert again.value.status_code == 403
    data.send_binary(b"echo right-$((2*3))\r")
    _read_until(data, b"right-6\r\n")
    control.close()
    data.settimeout(10)
    opcode = None
    while opcode != websocket.ABNF.OPCODE_CLOSE:  # detaching closes the console channel
        opcode, payload = data.recv_data()
    assert int.from_bytes(payload[:2], "big") == 1000
    assert session_is_free(service, serial_guest)
    assert secret_never_logged(service, fds)


def secret_never_logged(service, fds):
    log = service.log()
    return fds["0"] not in log and fds["control"] not in log


def test_socket_permissions_are_the_credential(service, serial_guest, local, public_dir):
    """The socket is root:nogroup 0660: a user of group nogroup gets in, a user outside it
    is refused by the kernel, and root's lxc keeps working."""
    st = os.stat(service.lxd_socket)
    assert (oct(st.st_mode & 0o777), st.st_gid) == ("0o660", grp.getgrnam("nogroup").gr_gid)

    def as_user(name, group):
        user = Lxc(public_dir / f"{name}-home", uid=pwd.getpwnam(name).pw_uid,
                   gid=grp.getgrnam(group).gr_gid)
        status, out = user.run("remote", "add", "cp", f"unix://{service.lxd_socket}")
        if status == 0:  # lxc 5.0.2 adds unix remotes without connecting
            status, out = user.run("console", f"cp:{serial_guest.name}", "--show-log")
        return status, out

    status, out = as_user("nobody", "nogroup")
    assert status == 0 and READY.decode() in out, out
    status, out = as_user("daemon", "daemon")
    assert status != 0 and "permission denied" in out, out
    status, out = local.run("console", f"cp:{serial_guest.name}", "--show-log")
    assert status == 0 and READY.decode() in out, out


def test_vga_is_refused_naming_the_vnc_console(service, serial_guest, local):
    """`lxc console --type vga` (SPICE) gets LXD's 400 with a message naming our VNC console."""
    console = local.console(f"cp:{serial_guest.name}", "--type", "vga")
    try:
        assert console.wait() != 0
    finally:
        console.close()
    assert b"Error: SPICE (type vga) is not offered" in console.received, console.received
    assert b"console_type" in console.received and b"vnc" in console.received
