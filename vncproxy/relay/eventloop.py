"""
A leaner event dispatch for Twisted's epoll reactor: each ready socket's handler is called
directly, instead of through Twisted's legacy logging context.

Twisted's C{EPollReactor.doPoll} calls every ready descriptor's handler through
C{twisted.python.log.callWithLogger}, which asks the descriptor for its C{logPrefix()}, copies
and updates the legacy log context dictionaries and pushes them on a per-thread stack, so that
old-style C{log.msg} lines written during the call carry the connection's name. Nothing here
logs that way (the service uses C{twisted.logger.Logger}, whose events never read that
context), yet it costs about 3.5 us of CPU per event measured in a loop, and, measured with
C{bench/}, 25-30 us of service CPU per keystroke round trip (two events) on both the WebSocket
and the xvpvnc paths, a tenth of the whole.

What is kept: the same poll call, the same handler (C{_doReadOrWrite}, which catches and logs
a failing C{doRead}/C{doWrite} and disconnects that descriptor), descriptors unknown by the
time their event is handled are skipped, and an exception escaping a handler (a failing
C{connectionLost}) is logged and the remaining events of the batch are still handled. What is
lost: a traceback Twisted logs the old way from inside a handler is tagged C{[-]} instead of
with the connection's C{logPrefix()}.

Other reactors (select, poll, asyncio; a test clock) are left alone.
"""

import errno
import types

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger

_log = Logger()


def _do_poll(self, timeout):
    if timeout is None:
        timeout = -1  # wait indefinitely
    try:
        events = self._poller.poll(timeout, len(self._selectables))
    except OSError as e:
        if e.errno == errno.EINTR:
            return
        raise
    selectables = self._selectables
    handle = self._doReadOrWrite
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        try:
            handle(selectable, fd, event)
        except KeyboardInterrupt:
            raise
        except BaseException:  # as callWithLogger: log it, go on with the batch
            _log.failure("unhandled error handling an event of {selectable!r}",
                         selectable=selectable)


def enable(reactor):
    """
    Give C{reactor} the lean dispatch when it is Twisted's epoll reactor.

    @return: C{True} when enabled, C{False} for any other reactor (left unchanged).
    """
    if not isinstance(reactor, EPollReactor):
        return False
    if type(reactor).doIteration is not EPollReactor.doPoll:
        return False  # a subclass with its own loop
    reactor.doIteration = types.MethodType(_do_poll, reactor)
    return True


__all__ = ["enable"]
