"""
Stopping the service in one process: open consoles get close code 4008 (service stopping), and
stopService (what twistd waits for before the process exits) only finishes once the viewers'
connections have ended, so the close frames are not lost with the process.
"""

import time

import pytest_twisted
from twisted.internet import reactor, threads

from tests.support import api
from tests.support.viewer import RfbViewer, WebSocketPipe, close_status, open_websocket
from vncproxy.closecodes import CloseCode

in_thread = threads.deferToThread


def open_viewer(proxy):
    status, body = api.grant(proxy.api_url, proxy.key, "vm1")
    assert status == 200, body
    url = body["href"].replace(proxy.service.ctx.config.websocket_base_url, proxy.ws_url)
    ws = open_websocket(url)
    RfbViewer(WebSocketPipe(ws)).handshake((3, 8))
    return ws


def read_close(ws):
    """Frames up to the close frame; the close's (code, reason)."""
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == 8:
            return close_status(data)


@pytest_twisted.inlineCallbacks
def test_stop_waits_for_the_viewers_to_get_the_close(proxy):
    """stopService closes both sessions with 4008 and finishes only after both connections ended."""
    factory = proxy.service._console_factory
    viewers = yield in_thread(lambda: [open_viewer(proxy), open_viewer(proxy)])
    assert len(factory.connections) == 2

    finished = []
    stopped = proxy.service.stopService()
    stopped.addCallback(lambda _: finished.append(len(factory.connections)))

    def slow_viewers():
        time.sleep(1.5)  # the viewers only look after a while: the stop must wait for them
        return finished[:], [read_close(ws) for ws in viewers]
    finished_before_reading, closes = yield in_thread(slow_viewers)
    yield stopped
    assert finished_before_reading == []
    assert finished == [0]
    assert closes == [(CloseCode.SERVICE_STOPPING, "service stopping")] * 2
    assert factory.connections == set()
    assert proxy.service.ctx.sessions.sessions() == []


@pytest_twisted.inlineCallbacks
def test_stop_without_consoles_is_immediate(proxy):
    """With no console open, stopService does not wait."""
    started = reactor.seconds()
    yield proxy.service.stopService()
    assert reactor.seconds() - started < 1.0
