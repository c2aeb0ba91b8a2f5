"""
Every object a console session writes to provides its interface of vncproxy.interfaces:
the viewers a session drives (IViewer, ISerialViewer) and the sinks a serial hub delivers to
(IHubSink). verifyObject fails the day a method or attribute is renamed on one side only.
"""

from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from vncproxy import config
from vncproxy.interfaces import IConsoleSink, IHubSink, ISerialViewer, IViewer
from vncproxy.lxd.console import _LxdViewer
from vncproxy.serial.session import SerialSession
from vncproxy.web.logfollow import LogFollower
from vncproxy.web.websocket import WebSocketViewer
from vncproxy.xvpvnc import TcpViewer


def websocket_protocol():
    return SimpleNamespace(transport=StringTransport())


def tcp_protocol(greet_at_once=False):
    return SimpleNamespace(transport=StringTransport(),
                           factory=SimpleNamespace(greet_at_once=greet_at_once))


@pytest.mark.parametrize("make, interface", [
    (lambda: WebSocketViewer(websocket_protocol()), ISerialViewer),
    (lambda: _LxdViewer(websocket_protocol(), None), ISerialViewer),
    (lambda: TcpViewer(tcp_protocol()), IViewer),
    (lambda: TcpViewer(tcp_protocol(greet_at_once=True)), IViewer),
])
def test_viewers_provide_their_interface(make, interface):
    """The WebSocket (console and LXD) and raw TCP ends a session drives are viewers."""
    viewer = make()
    assert verifyObject(interface, viewer)
    assert verifyObject(IConsoleSink, viewer)
    assert viewer.network_transport is not None


def test_a_serial_session_is_a_hub_sink():
    """The hub delivers to a serial session through IHubSink; the session's viewer carries it."""
    ctx = SimpleNamespace(reactor=Clock(), config=config.defaults())
    viewer = WebSocketViewer(websocket_protocol())
    session = SerialSession(ctx, grant=None, viewer=viewer, peer="tcp4:127.0.0.1:1")
    assert verifyObject(IHubSink, session)
    assert session.network_transport is viewer.network_transport


def test_a_log_follower_is_a_hub_sink():
    """A following console-log response is fed by the hub as a sink too."""
    follower = LogFollower(DummyRequest([b"console_log"]), "i1")
    assert verifyObject(IHubSink, follower)
    assert follower.network_transport is not None
