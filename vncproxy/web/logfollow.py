"""
Following an instance's serial console log over HTTP (C{GET .../console_log?follow=true}): the
log's tail, then new output as it is captured, as one chunked response, until the client goes
away or the instance stops.

The follower is a read-only viewer of the instance's L{vncproxy.serial.hub.SerialHub} without
the scrollback (it got the log's tail instead: both are read on the reactor thread, so nothing
is lost or repeated in between), and so it has a viewer's flow control: while the client does
not read, the response's transport pauses delivery and output queues; a follower too far
behind (C{[serial] viewer_queue}, C{slow_viewer_grace}) is cut like a slow serial viewer: its
connection is aborted, so the response ends without its last chunk and the client can tell.
"""

from twisted.logger import Logger
from zope.interface import implementer

from vncproxy.closecodes import CloseCode
from vncproxy.interfaces import IHubSink


class _ResponseConsumer:
    """
    The response as the consumer the hub's viewer registers with, also after the client has
    gone (when the request itself no longer has a channel).
    """

    def __init__(self, request):
        self._request = request
        self.producer = None

    def registerProducer(self, producer, streaming):
        self.producer = producer
        if self._request.channel is not None:
            self._request.registerProducer(producer, streaming)

    def unregisterProducer(self):
        self.producer = None
        if self._request.channel is not None and self._request.producer is not None:
            self._request.unregisterProducer()


@implementer(IHubSink)
class LogFollower:
    """
    The hub sink of one following response (an L{vncproxy.interfaces.IHubSink}).

    @param request: the HTTP request, its headers and the log's tail already written.
    @param instance: the instance UUID, for logs.
    """

    _log = Logger()

    def __init__(self, request, instance):
        self._request = request
        self._instance = instance
        self._place = None
        self._done = False
        self.network_transport = _ResponseConsumer(request)
        request.notifyFinish().addBoth(self._client_gone)

    def follow(self, place):
        """
        Start delivering from C{place} (the L{vncproxy.serial.viewer.Viewer} the hub gave us).
        """
        self._place = place
        if self._done:
            place.leave()
        else:
            place.open()

    # -- the hub's side --------------------------------------------------------------------------

    def send(self, chunk):
        if not self._done:
            self._request.write(chunk.data)

    def close(self, code, detail=None):
        if self._done:
            return
        self._done = True
        if code == CloseCode.SLOW_VIEWER:
            self._log.info("console log follower of {instance} cut: {detail}",
                           instance=self._instance, detail=detail)
            transport = self._request.channel.transport if self._request.channel else None
            if transport is not None:
                transport.abortConnection()
            return
        self._request.finish()

    def pause_reading(self):
        pass  # a follower sends nothing

    def resume_reading(self):
        pass

    # -- the client's side -----------------------------------------------------------------------

    def _client_gone(self, _):
        self._done = True
        if self._place is not None:
            self._place.leave()
