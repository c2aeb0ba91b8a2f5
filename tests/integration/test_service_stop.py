"""
Stopping the service in one process: open consoles get close code 4008 (service stopping), and
stopService (what twistd waits for before the process exits) only finishes once the viewers'
connections have ended, so the close frames are not lost with the process.

On the memory tier (L{tests.support.memory}): a viewer that is slow to look is one whose bytes
stay on the in-memory network while the clock runs.
"""

from tests.support.viewer import RfbViewer, until_closed
from vncproxy.closecodes import CloseCode


def open_viewer(proxy):
    pipe = proxy.websocket_pipe(proxy.href(proxy.granted()))
    RfbViewer(pipe).handshake((3, 8))
    return pipe


def test_stop_waits_for_the_viewers_to_get_the_close(memory_proxy):
    """stopService closes both sessions with 4008 and finishes only after both connections ended."""
    proxy = memory_proxy
    factory = proxy.service._console_factory
    viewers = [open_viewer(proxy), open_viewer(proxy)]
    assert len(factory.connections) == 2

    finished = []
    stopped = proxy.service.stopService()
    stopped.addCallback(lambda _: finished.append(len(factory.connections)))
    proxy.reactor.advance(1.5)  # the viewers only look after a while: the stop must wait for them
    finished_before_reading = finished[:]
    closes = [until_closed(pipe) for pipe in viewers]
    proxy.wait_until(lambda: finished)  # the stop polls for the connections' end
    assert finished_before_reading == []
    assert finished == [0]
    assert closes == [(CloseCode.SERVICE_STOPPING, "service stopping")] * 2
    assert factory.connections == set()
    assert proxy.service.ctx.sessions.sessions() == []


def test_stop_without_consoles_is_immediate(memory_proxy):
    """With no console open, stopService does not wait."""
    proxy = memory_proxy
    started = proxy.reactor.seconds()
    stopped = []
    proxy.service.stopService().addBoth(stopped.append)
    proxy.network.flush()  # runs what is due now, and nothing later
    assert len(stopped) == 1 and proxy.reactor.seconds() == started
