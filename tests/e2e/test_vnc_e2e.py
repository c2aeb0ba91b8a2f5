"""
End to end: the real service (twistd subprocess) in front of a real QEMU VNC server run by a
real libvirtd. A viewer gets a token from the API, opens the WebSocket, completes the RFB
handshake as noVNC would (the proxy answers QEMU's VNC password challenge), and receives the
guest's real framebuffer.
"""

import struct
import subprocess
import time
from pathlib import Path

import pytest
import websocket

from tests.e2e.service import ServiceProcess
from tests.support import api
from tests.support.png import write_png
from tests.support.viewer import RfbViewer, WebSocketPipe, open_websocket

TOKEN_TTL = 4
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ISSUED = []  # every token this module was granted, for the log check at the end


def grant(service, instance):
    status, body = api.grant(service.api_url, service.key, instance)
    assert status == 200, body
    ISSUED.append(body["access_token"])
    return body


@pytest.fixture(scope="module")
def service(vnc_guest, tmp_path_factory):
    proc = ServiceProcess(tmp_path_factory.mktemp("consoleproxy"), tokens__token_ttl=TOKEN_TTL)
    proc.start()
    yield proc
    proc.stop()


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    return struct.unpack("!II", header[16:24])


def connect(service, href, **kwargs):
    return open_websocket(href, **kwargs)


def ws_status(url, **kwargs):
    try:
        open_websocket(url, **kwargs).close()
    except websocket.WebSocketBadStatusException as e:
        return e.status_code
    return 101


def test_token_opens_the_guests_screen(service, vnc_guest, tmp_path):
    """A viewer reaches the guest's ServerInit (its real size) and gets non-blank pixels."""
    body = grant(service, vnc_guest.name)
    assert body["href"].startswith(f"{service.ws_url}/v1/instances/{vnc_guest.uuid}/console?access_token=")
    ws = connect(service, body["href"])
    viewer = RfbViewer(WebSocketPipe(ws))
    init = viewer.handshake((3, 8))
    # The screen as QEMU itself reports it (QMP screendump through libvirt, not VNC).
    shot = tmp_path / "screen.png"
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", "screenshot", vnc_guest.name, str(shot)],
                   check=True, capture_output=True)
    assert (init.width, init.height) == png_size(shot)
    assert init.name == f"QEMU ({vnc_guest.name})"
    rects = viewer.framebuffer_update()
    pixels = b"".join(data for _, data in rects)
    covered = sum(w * h for (_, _, w, h), _ in rects)
    assert covered == init.width * init.height
    assert pixels.count(0) < len(pixels)  # the text console is not a blank screen
    # QEMU's raw full-screen update went to the viewer by splice, not by copy (zerocopy)
    status, metrics = api.call(f"{service.api_url}/metrics")
    spliced = [line for line in metrics.decode().splitlines()
               if line.startswith("consoleproxy_vnc_bytes_spliced_total ")]
    assert status == 200 and float(spliced[0].split()[1]) > 0
    ws.close()
    ARTIFACTS.mkdir(exist_ok=True)
    write_png(ARTIFACTS / "vnc-through-proxy.png", init.width, init.height, rects)


@pytest.mark.parametrize("version", [(3, 3), (3, 7)])
def test_older_rfb_viewers_reach_server_init(service, vnc_guest, version):
    """RFB 3.3 and 3.7 viewers get the same ServerInit through the proxy."""
    body = grant(service, vnc_guest.uuid)
    ws = connect(service, body["href"])
    init = RfbViewer(WebSocketPipe(ws)).handshake(version)
    assert init.name == f"QEMU ({vnc_guest.name})"
    ws.close()


def test_reused_token_is_refused(service, vnc_guest):
    """A token works once; the second connection gets 401."""
    body = grant(service, vnc_guest.name)
    connect(service, body["href"]).close()
    assert ws_status(body["href"]) == 401


def test_wrong_token_is_refused(service, vnc_guest):
    """An unknown token gets 401."""
    assert ws_status(f"{service.ws_url}/websockify?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") == 401


def test_expired_token_is_refused(service, vnc_guest):
    """A token past its TTL gets 401."""
    body = grant(service, vnc_guest.name)
    time.sleep(TOKEN_TTL + 0.5)
    assert ws_status(body["href"]) == 401


def test_wrong_origin_is_refused(service, vnc_guest):
    """A page on another origin cannot open the console (403); the token survives the attempt."""
    body = grant(service, vnc_guest.name)
    assert ws_status(body["href"], origin="https://attacker.example") == 403
    assert ws_status(body["href"], origin=f"http://127.0.0.1:{service.console_port}") == 101


def test_no_secret_in_the_service_log(service, vnc_guest):
    """After all of the above, the service's log holds no token, API key or VNC password."""
    body = grant(service, vnc_guest.name)
    connect(service, body["href"]).close()
    time.sleep(0.5)
    log = service.log()
    assert "vnc console of" in log and "granted vnc console" in log
    assert len(ISSUED) >= 7
    for token in ISSUED:
        assert token not in log
    assert vnc_guest.vnc_password not in log
    assert service.key not in log
