"""
End to end, real service and real guests: each API family's URL connects; the third VNC session
is refused with its close code; idle and max timers close sessions; virsh destroy closes the
sessions and virsh reboot does not.
"""

import json
import os
import subprocess
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import websocket

from tests.e2e.service import ServiceProcess
from tests.support import api
from tests.support.viewer import PipeClosed, RfbViewer, WebSocketPipe, open_websocket
from vncproxy.closecodes import CloseCode


@pytest.fixture(scope="module")
def service(vnc_guest, tmp_path_factory):
    proc = ServiceProcess(tmp_path_factory.mktemp("rules"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def short_service(vnc_guest, tmp_path_factory):
    proc = ServiceProcess(tmp_path_factory.mktemp("short"), sessions__idle_timeout=1.5,
                          sessions__max_session=4)
    proc.start()
    yield proc
    proc.stop()


def viewer_for(url):
    viewer = RfbViewer(WebSocketPipe(open_websocket(url)))
    viewer.handshake()
    return viewer


def novnc_ws(service, url):
    path = parse_qs(urlsplit(url).query)["path"][0]
    return f"{service.ws_url}/{path}"


def close_code_of(viewer, busy=False, limit=30):
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            if busy:
                viewer.framebuffer_update(incremental=True)
                time.sleep(0.2)
            else:
                viewer.read(1)
    except PipeClosed as e:
        return e.args[0][0]
    return None


def test_each_api_family_yields_a_url_that_connects(service, vnc_guest):
    """IBM's href, Nova's remote-consoles URL and the os-getVNCConsole URL each open the guest's screen."""
    _, ibm = api.grant(service.api_url, service.key, vnc_guest.name)
    _, nova = api.call(f"{service.api_url}/v2.1/servers/{vnc_guest.uuid}/remote-consoles", "POST",
                       {"remote_console": {"protocol": "vnc", "type": "novnc"}}, key=service.key,
                       headers={"OpenStack-API-Version": "compute 2.6"})
    _, legacy = api.call(f"{service.api_url}/v2.1/myproject/servers/{vnc_guest.uuid}/action",
                         "POST", {"os-getVNCConsole": {"type": "novnc"}}, key=service.key)
    urls = [ibm["href"], novnc_ws(service, nova["remote_console"]["url"]),
            novnc_ws(service, legacy["console"]["url"])]
    for url in urls:
        viewer = viewer_for(url)
        assert viewer.server_init.name == f"QEMU ({vnc_guest.name})"
        viewer.pipe.close()
        time.sleep(0.2)


def test_third_vnc_session_is_refused_with_its_close_code(service, vnc_guest):
    """Two sessions work; a third token is refused at the API (409) and at connect (409, close code 4003)."""
    _, early = api.grant(service.api_url, service.key, vnc_guest.name)
    viewers = [viewer_for(api.grant(service.api_url, service.key, vnc_guest.name)[1]["href"])
               for _ in range(2)]
    status, body = api.grant(service.api_url, service.key, vnc_guest.name)
    assert status == 409 and body["errors"][0]["close_code"] == CloseCode.LIMIT_REACHED
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_websocket(early["href"])
    assert refused.value.status_code == 409
    refusal = json.loads(refused.value.resp_body)  # IBM's format: an IBM href
    assert refusal["errors"][0]["close_code"] == CloseCode.LIMIT_REACHED
    for viewer in viewers:
        viewer.pipe.close()


def test_idle_session_closes(short_service, vnc_guest):
    """A session without traffic closes after idle_timeout with 4005."""
    viewer = viewer_for(api.grant(short_service.api_url, short_service.key, vnc_guest.name)[1]["href"])
    assert close_code_of(viewer, limit=10) == CloseCode.IDLE_TIMEOUT


def test_busy_session_closes_at_max_session(short_service, vnc_guest):
    """A session with steady traffic outlives idle_timeout and closes at max_session with 4006."""
    viewer = viewer_for(api.grant(short_service.api_url, short_service.key, vnc_guest.name)[1]["href"])
    t0 = time.monotonic()
    assert close_code_of(viewer, busy=True, limit=15) == CloseCode.SESSION_TOO_LONG
    assert time.monotonic() - t0 > 2.5


@pytest.fixture
def lifecycle_guest(testbed):
    name = f"cp-e2e-life-{os.getpid()}"
    guest = testbed.make_guest(name, vnc_password="lifepw1")
    yield guest
    testbed.remove_guest(name)


def virsh(*args):
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", *args], check=True,
                   capture_output=True, timeout=60)


def test_reboot_keeps_sessions_and_destroy_closes_them(service, lifecycle_guest):
    """virsh reboot leaves the VNC session working; virsh destroy closes it with 4007."""
    viewer = viewer_for(api.grant(service.api_url, service.key, lifecycle_guest.name)[1]["href"])
    since = lifecycle_guest.serial_offset()
    virsh("reboot", lifecycle_guest.name)
    lifecycle_guest.wait_for_serial(lifecycle_guest.prompt, timeout=90, since=since)
    assert viewer.framebuffer_update()  # still relaying after the guest rebooted
    virsh("destroy", lifecycle_guest.name)
    assert close_code_of(viewer, limit=20) == CloseCode.INSTANCE_STOPPED
