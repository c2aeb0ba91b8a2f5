"""
LogFollower on a real HTTP channel over a StringTransport, fed by a real SerialHub on a test
clock: output becomes chunks of the response, the end of the instance finishes it, a client that
does not read is cut, a client that leaves stops the delivery.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import http

from vncproxy.closecodes import CloseCode
from vncproxy.serial.hub import SerialHub
from vncproxy.web.logfollow import LogFollower


class _Request(http.Request):
    made = []

    def process(self):
        self.setResponseCode(200)
        self.write(b"tail\n")
        _Request.made.append(self)


def follow(queue_limit=4096):
    clock = Clock()
    hub = SerialHub("i1", clock, scrollback=1024, queue_limit=queue_limit, grace=1.0)
    hub.source_data(b"scrollback the follower must not get\n")
    transport = StringTransport()
    channel = http.HTTPChannel()
    channel.requestFactory = _Request
    channel.makeConnection(transport)
    _Request.made.clear()
    channel.dataReceived(b"GET /log HTTP/1.1\r\nHost: x\r\n\r\n")
    request = _Request.made[0]
    follower = LogFollower(request, "i1")
    follower.follow(hub.join(follower, interactive=False, scrollback=False))
    return clock, hub, transport, request


def body(transport):
    head, _, rest = transport.value().partition(b"\r\n\r\n")
    data = b""
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return data, True
        data, rest = data + rest[:n], rest[n + 2:]
    return data, False


def test_output_is_streamed_as_chunks_after_the_tail():
    clock, hub, transport, _ = follow()
    hub.source_data(b"one\n")
    hub.source_data(b"two\n")
    assert body(transport) == (b"tail\none\ntwo\n", False)


def test_the_response_ends_when_the_viewers_are_closed():
    """The instance stopped (or the service stops): the response completes."""
    clock, hub, transport, _ = follow()
    hub.source_data(b"last\n")
    hub.close_viewers(CloseCode.INSTANCE_STOPPED)
    assert body(transport) == (b"tail\nlast\n", True)
    assert hub.viewers == []


def test_a_client_that_does_not_read_is_cut_without_the_last_chunk():
    clock, hub, transport, _ = follow(queue_limit=4096)
    transport.producer.pauseProducing()  # the client's socket buffer is full
    hub.source_data(b"a" * 4000)
    assert hub.viewers != [] and not transport.disconnecting
    hub.source_data(b"b" * 5000)  # over the limit: the grace runs
    clock.advance(1.0)
    assert hub.viewers == []
    assert transport.disconnecting or getattr(transport, "disconnected", False)
    assert body(transport) == (b"tail\n", False)


def test_a_paused_client_that_catches_up_gets_everything():
    clock, hub, transport, _ = follow(queue_limit=4096)
    transport.producer.pauseProducing()
    hub.source_data(b"a" * 3000)
    transport.producer.resumeProducing()
    assert body(transport) == (b"tail\n" + b"a" * 3000, False)


def test_a_client_that_leaves_is_forgotten():
    clock, hub, transport, request = follow()
    request.channel.connectionLost(Failure(ConnectionDone()))
    assert hub.viewers == []
    hub.source_data(b"after\n")  # nothing to write to, nothing raised
