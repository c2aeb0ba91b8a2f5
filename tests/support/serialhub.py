"""
The viewer's side of a L{vncproxy.serial.hub.SerialHub} for unit tests: a sink that records
what it got, a transport with a send buffer that pauses its producer as TCP does, and a hub on
a real PTY pair. The fixtures C{reactor}, C{pty} and C{console} are defined here under other
Python names, so that a test module imports them (C{console_fixture} and so on) without its
tests' arguments shadowing the import.
"""

import pytest
from twisted.internet.testing import MemoryReactorClock

from tests.support.ptypair import PtyPair
from vncproxy.serial.capture import ConsoleLog
from vncproxy.serial.hub import SerialHub
from vncproxy.serial.pty import PtySource

UUID = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"


class FakeTransport:
    """
    A transport with a send buffer: past C{limit} bytes it pauses its producer, as TCP does;
    L{drain} empties it and resumes the producer.
    """

    def __init__(self, limit=64 * 1024):
        self.limit = limit
        self.buffered = 0
        self.producer = None
        self.paused = False

    def registerProducer(self, producer, streaming):
        assert streaming and self.producer is None
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, n):
        self.buffered += n
        if self.buffered > self.limit and self.producer is not None and not self.paused:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self):
        self.buffered = 0
        if self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()


class Sink:
    """
    A viewer's side of the hub: records what it got and how it was closed.
    """

    def __init__(self, transport=None):
        self.received = bytearray()
        self.chunks = []
        self.closed = None
        self.network_transport = transport
        self.reading = True

    def send(self, chunk):
        self.chunks.append(chunk)
        self.received += chunk.data
        if self.network_transport is not None:
            self.network_transport.write(len(chunk.data))

    def close(self, code, detail):
        assert self.closed is None, "closed twice"
        self.closed = (code, detail)

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True


@pytest.fixture(name="reactor")
def reactor_fixture():
    return MemoryReactorClock()


@pytest.fixture(name="pty")
def pty_fixture():
    pair = PtyPair()
    yield pair
    pair.close()


@pytest.fixture(name="console")
def console_fixture(reactor, pty, tmp_path):
    """
    A hub (1 KB scrollback, 8 KB queue limit, 5 s grace, 4 viewers) whose source is a
    PtySource on the test's PTY, logging to tmp_path: C{(hub, source, log, ended)}, C{ended}
    collecting the source's end reasons.
    """
    log = ConsoleLog(str(tmp_path), UUID, 1 << 20, 2)
    hub = SerialHub(UUID, reactor, log=log, scrollback=1024, queue_limit=8192, grace=5.0,
                    max_viewers=4)
    ended = []
    source = PtySource(reactor, pty.path, hub.source_data, ended.append)
    hub.attach_source(source)
    yield hub, source, log, ended
    source.close()
