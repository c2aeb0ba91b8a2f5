"""
End to end: stopping the real service (SIGTERM to twistd, as systemd stops the unit) closes
every open console with close code 4008 (service stopping), and the close frame reaches the
viewers before the process exits, even a viewer that is behind on reading a backlog of
framebuffer updates.
"""

import signal
import socket
import struct
import time

import pytest
import websocket

from tests.e2e.service import ServiceProcess
from tests.support import api
from tests.support.viewer import RfbViewer, WebSocketPipe, close_status

SERVICE_STOPPING = 4008


@pytest.fixture
def service(vnc_guest, tmp_path):
    proc = ServiceProcess(tmp_path / "consoleproxy")
    proc.start()
    yield proc
    proc.stop()


def open_viewer(service, guest, sockopt=()):
    status, body = api.grant(service.api_url, service.key, guest.name)
    assert status == 200, body
    ws = websocket.create_connection(body["href"], timeout=20, suppress_origin=True,
                                     sockopt=sockopt)
    viewer = RfbViewer(WebSocketPipe(ws))
    viewer.handshake((3, 8))
    return ws, viewer


def read_until_close(ws, timeout=20):
    """
    Read (and drop) frames until the close frame; return its (code, reason) and how many
    payload bytes came before it. Raises if the connection ends without a close frame.
    """
    ws.settimeout(timeout)
    received = 0
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return close_status(data), received
        received += len(data)


def test_sigterm_closes_sessions_with_service_stopping(service, vnc_guest):
    """Both an idle viewer and one with a backlog of unread screen updates get close 4008."""
    idle_ws, _ = open_viewer(service, vnc_guest)
    # A slow viewer: small receive buffer, asks for many full screens and reads none of them,
    # so the proxy holds a backlog for it when the stop comes.
    slow_ws, slow = open_viewer(service, vnc_guest,
                                sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    si = slow.server_init
    slow.pipe.send(struct.pack("!BxHi", 2, 1, 0))  # SetEncodings: Raw only
    for _ in range(40):  # QEMU answers requests one at a time: spread them out
        slow.pipe.send(struct.pack("!BBHHHH", 3, 0, 0, 0, si.width, si.height))
        time.sleep(0.05)

    service.process.send_signal(signal.SIGTERM)

    (code, reason), _ = read_until_close(idle_ws)
    assert (code, reason) == (SERVICE_STOPPING, "service stopping")
    # The slow viewer only starts reading now: well after the stop began, but within the
    # close handshake timeout (5 s), after which a viewer that does not answer is dropped.
    time.sleep(3.0)
    (code, reason), backlog = read_until_close(slow_ws)
    assert (code, reason) == (SERVICE_STOPPING, "service stopping")
    assert backlog > si.width * si.height  # it really was behind by more than a screen
    # twistd ends itself with the signal that stopped it (as systemd expects of a clean stop)
    assert service.process.wait(timeout=20) in (0, -signal.SIGTERM)
    log = service.log()
    assert log.count("service stopping") >= 2
    assert "Server Shut Down." in log
