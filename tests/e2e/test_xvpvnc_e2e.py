"""
End to end, the xvpvnc listener: the real service (twistd subprocess) in front of a real QEMU
guest run by libvirtd. A CONNECT-speaking client (Nova's xvp viewer protocol) and native
viewers with the one-time password of the token response reach the guest's ServerInit;
vncdotool, a real native VNC client, captures the guest's screen through the proxy.
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.service import ServiceProcess
from tests.support import api
from tests.support.viewer import RfbRefused, RfbViewer, connect_tcp, xvp_connect

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ISSUED = []  # every token and password this module was given, for the log check at the end


def vncdo_binary():
    found = Path(sys.executable).with_name("vncdo")
    return str(found) if found.exists() else shutil.which("vncdo")


@pytest.fixture(scope="module")
def service(vnc_guest, tmp_path_factory):
    proc = ServiceProcess(tmp_path_factory.mktemp("consoleproxy-xvpvnc"),
                          xvpvnc__native_wait=0.5, ratelimit__refuse_after=3)
    proc.start()
    yield proc
    proc.stop()


def grant(service, instance):
    status, body = api.grant(service.api_url, service.key, instance)
    assert status == 200, body
    ISSUED.extend([body["access_token"], body["password"]])
    return body


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_token_response_names_the_native_listener(service, vnc_guest):
    """The vnc token response carries an 8-character password and its vnc:// URL on the native
    VNC listener ([listen] vnc)."""
    body = grant(service, vnc_guest.name)
    assert len(body["password"]) == 8
    assert body["vnc_url"] == f"vnc://:{body['password']}@127.0.0.1:{service.vnc_port}"


@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
def test_connect_client_gets_the_guests_server_init(service, vnc_guest, version):
    """CONNECT /console?token=T gets '200 OK', then the guest's ServerInit with security None."""
    body = grant(service, vnc_guest.name)
    response, pipe = xvp_connect("127.0.0.1", service.xvpvnc_port,
                                 f"/console?token={body['access_token']}",
                                 headers=["Host: 127.0.0.1"])
    assert response == b"HTTP/1.1 200 OK\r\n\r\n"
    viewer = RfbViewer(pipe)
    init = viewer.handshake(version)
    assert init.name == f"QEMU ({vnc_guest.name})"
    rects = viewer.framebuffer_update()
    assert sum(w * h for (_, _, w, h), _ in rects) == init.width * init.height
    pipe.close()


def test_connect_with_a_bad_token(service, vnc_guest):
    """A bad token on the xvpvnc port gets exactly '401 Not Authorized'."""
    response, pipe = xvp_connect("127.0.0.1", service.xvpvnc_port,
                                 "/console?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert response == b"HTTP/1.1 401 Not Authorized\r\n\r\n"
    pipe.close()


@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
def test_native_viewer_gets_the_guests_server_init(service, vnc_guest, version):
    """A native viewer (RFB 3.3, 3.7, 3.8) with the one-time password reaches the guest."""
    body = grant(service, vnc_guest.name)
    viewer = RfbViewer(connect_tcp("127.0.0.1", service.xvpvnc_port))
    init = viewer.handshake(version, password=body["password"].encode())
    assert init.name == f"QEMU ({vnc_guest.name})"
    viewer.pipe.close()


def test_vncdotool_captures_the_screen_with_the_one_time_password(service, vnc_guest, tmp_path):
    """vncdotool (a real native client) captures the guest's screen through the xvpvnc port."""
    vncdo = vncdo_binary()
    assert vncdo, "vncdotool is part of the test extra (pip install vncdotool)"
    body = grant(service, vnc_guest.name)
    shot = tmp_path / "vncdo.png"
    run = subprocess.run([vncdo, "-s", f"127.0.0.1::{service.xvpvnc_port}",
                          "-p", body["password"], "capture", str(shot)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    reference = tmp_path / "qemu.png"
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", "screenshot", vnc_guest.name,
                    str(reference)], check=True, capture_output=True)
    assert png_size(shot) == png_size(reference)
    from PIL import Image
    with Image.open(shot) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 1  # the text console is not one flat colour
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "vncdotool-through-xvpvnc.png")


def test_vncdotool_with_a_wrong_password_is_refused(service, vnc_guest, tmp_path):
    """vncdotool with a wrong password gets no screen."""
    grant(service, vnc_guest.name)  # a live password exists, just not this one
    shot = tmp_path / "wrong.png"
    run = subprocess.run([vncdo_binary(), "-s", f"127.0.0.1::{service.xvpvnc_port}",
                          "-p", "WrongPw9", "capture", str(shot)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert not shot.exists()
    assert "authentication failed" in (run.stdout + run.stderr).lower()


@pytest.mark.parametrize("route", ["remote-consoles", "os-getVNCConsole"])
def test_openstack_xvpvnc_url_opens_the_console(service, vnc_guest, route):
    """The xvpvnc URL from remote-consoles / os-getVNCConsole opens the guest via CONNECT."""
    from urllib.parse import urlsplit

    base = f"{service.api_url}/v2.1/servers/{vnc_guest.uuid}"
    if route == "remote-consoles":
        status, body = api.call(f"{base}/remote-consoles", "POST",
                                {"remote_console": {"protocol": "vnc", "type": "xvpvnc"}},
                                key=service.key)
        url = body["remote_console"]["url"]
    else:
        status, body = api.call(f"{base}/action", "POST", {"os-getVNCConsole": {"type": "xvpvnc"}},
                                key=service.key)
        url = body["console"]["url"]
    assert status == 200, body
    parts = urlsplit(url)
    ISSUED.append(parts.query.partition("token=")[2])
    assert (parts.scheme, parts.port, parts.path) == ("http", service.xvpvnc_port, "/console")
    response, pipe = xvp_connect(parts.hostname, parts.port, f"{parts.path}?{parts.query}")
    assert response == b"HTTP/1.1 200 OK\r\n\r\n"
    assert RfbViewer(pipe).handshake().name == f"QEMU ({vnc_guest.name})"
    pipe.close()


# Keep this one last but one: it leaves 127.0.0.1 blocked for the rest of the window.
def test_wrong_passwords_are_rate_limited(service, vnc_guest):
    """After 3 failures from this address (bad tokens and wrong passwords alike), even the right password is refused."""
    body = grant(service, vnc_guest.name)
    answers = []
    for _ in range(4):
        with pytest.raises(RfbRefused) as refused:
            RfbViewer(connect_tcp("127.0.0.1", service.xvpvnc_port)).handshake(
                password=b"WrongPw9")
        answers.append(str(refused.value))
        if "too many" in answers[-1]:
            break
    assert answers[0] == "authentication failed"
    assert "too many failed attempts from your address" in answers[-1]
    with pytest.raises(RfbRefused) as refused:
        RfbViewer(connect_tcp("127.0.0.1", service.xvpvnc_port)).handshake(
            password=body["password"].encode())
    assert "too many failed attempts from your address" in str(refused.value)


def test_no_secret_in_the_service_log(service, vnc_guest):
    """The service's log holds none of the tokens, passwords, API key or VNC password."""
    time.sleep(0.5)
    log = service.log()
    # the native logins' own lines, and the audit's connect events (a CONNECT has no line of
    # its own: its session's audit events say it)
    assert "native vnc login" in log and "vnc console of" in log and "native login" in log
    assert len(ISSUED) >= 10
    for secret in ISSUED + ["WrongPw9", service.key, vnc_guest.vnc_password]:
        assert secret not in log
