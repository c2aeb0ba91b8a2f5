"""
The lean event dispatch (vncproxy.relay.eventloop) on a private epoll reactor (never run, never the
global one): one iteration at a time over real socket pairs.
"""

import select
import socket

import pytest
from twisted.internet import epollreactor, selectreactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from vncproxy.relay import eventloop


class _Reader:
    """
    An IReadDescriptor over one end of a socket pair, recording what it read.
    """

    def __init__(self, sock, lost=None):
        self.sock = sock
        self.got = []
        self._lost = lost

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        data = self.sock.recv(4096)
        if not data:
            from twisted.internet.main import CONNECTION_DONE

            return CONNECTION_DONE
        self.got.append(data)
        return None

    def connectionLost(self, reason):
        if self._lost is not None:
            self._lost(reason)

    def logPrefix(self):
        return "reader"


@pytest.fixture
def reactor():
    r = epollreactor.EPollReactor()
    yield r
    _close(r)


def _close(r):
    r._poller.close()
    if r.waker is not None:
        r.waker.connectionLost(None)


@pytest.fixture
def pairs():
    made = []

    def make():
        a, b = socket.socketpair()
        made.extend((a, b))
        return a, b

    yield make
    for s in made:
        s.close()


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_only_twisteds_own_epoll_reactor_is_changed():
    """
    The epoll reactor gets the lean dispatch; other reactors, a test clock and an epoll
    subclass with its own loop are left as they are.
    """
    epoll = epollreactor.EPollReactor()
    try:
        assert eventloop.enable(epoll) is True
        assert epoll.doIteration.__func__ is eventloop._do_poll
    finally:
        _close(epoll)

    class OwnLoop(epollreactor.EPollReactor):
        def doPoll(self, timeout):
            pass

        doIteration = doPoll

    own = OwnLoop()
    selector = selectreactor.SelectReactor()
    try:
        assert eventloop.enable(own) is False
        assert eventloop.enable(selector) is False
        assert "doIteration" not in vars(own) and "doIteration" not in vars(selector)
    finally:
        _close(own)
        selector.waker.connectionLost(None)
    assert eventloop.enable(Clock()) is False


def test_ready_sockets_are_read_in_one_iteration(reactor, pairs):
    """
    Every socket with bytes waiting is read in the same iteration, and a quiet one is not.
    """
    eventloop.enable(reactor)
    (a, a_peer), (b, b_peer), (c, _) = pairs(), pairs(), pairs()
    readers = [_Reader(a), _Reader(b), _Reader(c)]
    for reader in readers:
        reactor.addReader(reader)
    a_peer.send(b"one")
    b_peer.send(b"two")
    reactor.doIteration(0)
    assert [r.got for r in readers] == [[b"one"], [b"two"], []]


def test_a_closed_peer_disconnects_its_reader(reactor, pairs):
    """
    A peer that closed is reported to its reader's connectionLost and the reader is removed.
    """
    eventloop.enable(reactor)
    reasons = []
    a, a_peer = pairs()
    reader = _Reader(a, lost=reasons.append)
    reactor.addReader(reader)
    a_peer.close()
    reactor.doIteration(0)
    assert len(reasons) == 1
    assert reader not in reactor.getReaders()


def test_a_failing_handler_is_logged_and_the_batch_goes_on(reactor, pairs, logged):
    """
    An exception escaping one descriptor's handling (here its connectionLost) is logged, and
    the other descriptors ready in the same iteration are still handled.
    """
    eventloop.enable(reactor)

    def explode(reason):
        raise RuntimeError("boom")

    (a, a_peer), (b, b_peer) = pairs(), pairs()
    failing, healthy = _Reader(a, lost=explode), _Reader(b)
    reactor.addReader(failing)
    reactor.addReader(healthy)
    a_peer.close()
    b_peer.send(b"still here")
    reactor.doIteration(0)
    assert healthy.got == [b"still here"]
    failures = [e for e in logged if "log_failure" in e]
    assert [e["log_failure"].value.args for e in failures] == [("boom",)]


def test_an_event_for_a_descriptor_no_longer_known_is_skipped(reactor, pairs, logged):
    """
    An event whose descriptor was removed by the time it is handled (an earlier handler in the
    batch dropped it) is skipped without an error, and the rest of the batch is handled.
    """
    eventloop.enable(reactor)
    a, a_peer = pairs()
    reader = _Reader(a)
    reactor.addReader(reader)
    a_peer.send(b"x")
    real = reactor._poller

    class Poller:
        def poll(self, timeout, maxevents):
            gone = (max(reactor._selectables) + 1000, select.EPOLLIN)
            return [gone] + real.poll(timeout, maxevents)

    reactor._poller = Poller()
    try:
        reactor.doIteration(0)
    finally:
        reactor._poller = real
    assert reader.got == [b"x"]
    assert not [e for e in logged if "log_failure" in e]
