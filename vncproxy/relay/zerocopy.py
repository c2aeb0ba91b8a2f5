"""
Zero-copy relay of the VNC server's output to the viewer with C{splice(2)}.

Screen updates are most of a console's bytes. On the ordinary path each chunk is copied out of
the kernel by C{recv}, joined to its WebSocket frame header (a second copy) and copied back in by
C{send}. Here the bytes move from QEMU's socket into a pipe and from the pipe into the viewer's
socket without entering the process: the pipe holds page references, not copies. Only the
frame header (2 or 4 bytes, 10 at most) is written by us.

How it fits Twisted:
    - the source transport's C{doRead} is replaced: when the reactor says QEMU's socket is
      readable, up to C{chunk} bytes are spliced into the pipe and on to the viewer;
    - it applies only while the viewer's transport has nothing queued, so order is kept; when
      the viewer's socket takes less than a chunk, the rest is read from the pipe and queued on
      the viewer's transport the ordinary way, so flow control is Twisted's (the producer
      registered on the viewer's transport pauses reading from QEMU past C{bufferSize});
    - the pipe is empty again when C{doRead} returns, so one pipe serves every session of the
      process (the reactor runs one C{doRead} at a time);
    - small reads (keystroke echoes, cursor moves) take the ordinary path: splicing them costs
      a system call more (the header goes separately) and saves no copy worth having. The relay
      switches to splicing after a read of at least C{threshold} bytes and back after a
      smaller one;
    - TLS on either side (VeNCrypt, C{wss:}) rules it out: those bytes must pass through TLS in
      the process. So does a platform without C{os.splice} (Linux 2.6.17+, Python 3.10+), and
      a socket that refuses to splice (C{EINVAL}) turns it off for that session.
"""

import errno
import fcntl
import os
import socket

from twisted.internet import main
from twisted.logger import Logger

from vncproxy.relay.writethrough import nothing_queued, plain_socket

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
#: Bytes one read may move: the pipe is sized to hold it.
CHUNK = 1024 * 1024
#: Reads at least this large switch the relay to splicing; smaller ones switch it back.
THRESHOLD = 16 * 1024

_log = Logger()


class _Pipe:
    """
    The process's splice pipe, created on first use.
    """

    fds = None

    @classmethod
    def get(cls):
        if cls.fds is None:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fcntl.fcntl(w, _F_SETPIPE_SZ, CHUNK)
            except OSError:  # above /proc/sys/fs/pipe-max-size: splice moves less per call
                pass
            cls.fds = (r, w)
        return cls.fds

    @classmethod
    def discard(cls):
        """
        Close the pipe (a new one is made on next use): called when a read could not drain it,
        so that no byte of one session can ever reach another's viewer.
        """
        fds, cls.fds = cls.fds, None
        for fd in fds or ():
            os.close(fd)


def available():
    """
    Whether this platform can splice sockets at all.
    """
    return hasattr(os, "splice") and hasattr(os, "pipe2")


class SpliceRelay:
    """
    Moves what C{source} reads to C{sink} with C{splice(2)} (see the module docstring).

    @param source: the VNC server's transport.
    @param viewer: the viewer adapter: its C{network_transport} is the sink; its
        C{splice_ready()} says whether a chunk may go now (a WebSocket must be open and not
        inside a message) and C{splice_header(n)} gives the bytes that go before a chunk of
        C{n} bytes (a frame header, or nothing on raw TCP).
    @param moved: called with the number of bytes each spliced read moved (accounting, idle
        timer); the ordinary path reports through the source's protocol as before.
    """

    def __init__(self, source, viewer, moved, chunk=CHUNK, threshold=THRESHOLD):
        self._source = source
        self._viewer = viewer
        self._sink = viewer.network_transport
        self._moved = moved
        self._chunk = chunk
        self._threshold = threshold
        self._ordinary_read = source.doRead
        self._splicing = False
        self._on = False

    @classmethod
    def install(cls, source, viewer, moved, **kw):
        """
        Splice C{source}'s output to C{viewer} when both sides are plain sockets and the
        platform can; returns the relay, or C{None} when it does not apply.
        """
        if not (available() and plain_socket(source)
                and plain_socket(viewer.network_transport)):
            return None
        relay = cls(source, viewer, moved, **kw)
        source.doRead = relay._doRead
        relay._on = True
        return relay

    def uninstall(self):
        if self._on:
            self._on = False
            self._source.doRead = self._ordinary_read

    def _sink_idle(self):
        return nothing_queued(self._sink) and self._viewer.splice_ready()

    def _doRead(self):
        if not self._splicing or not self._sink_idle():
            return self._read_ordinarily()
        pipe_r, pipe_w = _Pipe.get()
        try:
            n = os.splice(self._source.socket.fileno(), pipe_w, self._chunk, flags=_FLAGS)
        except OSError as e:
            if e.errno in _AGAIN:
                return None
            if e.errno in _UNSUPPORTED:
                _log.info("splice unavailable here ({error}); relaying by copy",
                          error=os.strerror(e.errno))
                self.uninstall()
                return self._ordinary_read()
            return main.CONNECTION_LOST
        if n == 0:
            return main.CONNECTION_DONE
        if n < self._threshold:
            self._splicing = False
        try:
            self._forward(self._viewer.splice_header(n), n, pipe_r)
        except BaseException:
            _Pipe.discard()
            raise
        self._moved(n)
        return None

    def _read_ordinarily(self):
        """
        Twisted's own read, noting its size to decide the next read's path.
        """
        source = self._source
        try:
            data = source.socket.recv(source.bufferSize)
        except OSError as e:
            if e.errno in _AGAIN:
                return None
            return main.CONNECTION_LOST
        if len(data) >= self._threshold:
            self._splicing = True
        return source._dataReceived(data)

    def _forward(self, header, n, pipe_r):
        sink = self._sink
        left = n
        try:
            if header:
                sent = sink.socket.send(header, socket.MSG_MORE)
                header = header[sent:]
            if not header:
                out = sink.socket.fileno()
                while left:
                    moved = os.splice(pipe_r, out, left, flags=_FLAGS)
                    if not moved:
                        break
                    left -= moved
        except OSError:
            pass  # EAGAIN, or an error the queued write below meets and reports as Twisted does
        if header or left:
            rest = [header]
            while left:
                piece = os.read(pipe_r, left)
                rest.append(piece)
                left -= len(piece)
            sink.write(b"".join(rest))


__all__ = ["CHUNK", "SpliceRelay", "THRESHOLD", "available"]
