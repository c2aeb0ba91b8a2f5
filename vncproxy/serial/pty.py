"""
L{PtySource}: a domain's serial PTY read directly, as an L{IConsoleSource}.

QEMU holds the leader side of the PTY and libvirt reports the follower's path
(C{<serial type='pty'><source path='/dev/pts/N'/>}). We open the follower non-blocking, without
making it our controlling terminal, in raw mode (QEMU already set it raw; we make sure, so that
nothing we write is echoed back to us as if the guest had printed it).

Facts this relies on (measured, see the testbed notes): the PTY is 0600 root:root, so only a
root service can open it; QEMU discards guest output while nobody holds the follower open, and
stalls the guest when the holder does not read (so we always read); two readers steal bytes
from each other (so we must be the only one); when QEMU exits, reads return EOF (or EIO) and
the descriptor stays dead: a new start gets a new PTY, which the caller opens anew.
"""

import errno
import os
import stat
import termios
import tty

from twisted.internet import abstract, fdesc
from twisted.logger import Logger
from zope.interface import implementer

from vncproxy.hypervisor import ConsoleUnavailable
from vncproxy.interfaces import IConsoleSource

#: Linux's Unix98 PTY follower majors (UNIX98_PTY_SLAVE_MAJOR 136, UNIX98_PTY_MAJOR_COUNT 8).
PTY_MAJORS = range(136, 144)


def _check_pty(path, st):
    """
    @raise ConsoleUnavailable: unless C{st} is a character device with a PTY follower major.
    """
    if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) not in PTY_MAJORS:
        raise ConsoleUnavailable(f"{path} is not a terminal: not a PTY follower (character "
                                 f"device of major {PTY_MAJORS.start}-{PTY_MAJORS.stop - 1})")


def open_pty(path):
    """
    Open a PTY follower safely: resolve C{path} (symbolic links, C{..}), check that it is a PTY
    before opening it (a path such as C{/dev/pts/../ptmx} or a link to a disk never gets
    opened), open without following links, and check the descriptor again.

    @return: the descriptor (non-blocking, close-on-exec, not our controlling terminal).
    @raise ConsoleUnavailable: when it is missing, unreadable or not a PTY.
    """
    real = os.path.realpath(path)
    try:
        _check_pty(path, os.stat(real))
        fd = os.open(real, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise ConsoleUnavailable(f"cannot open serial PTY {path}: {e.strerror}") from None
    try:
        _check_pty(path, os.fstat(fd))  # what was opened, not what was looked at
    except ConsoleUnavailable:
        os.close(fd)
        raise
    return fd


@implementer(IConsoleSource)
class PtySource(abstract.FileDescriptor):
    """
    @param reactor: an L{IReactorFDSet} (and L{IReactorTime}).
    @param path: the follower side of the PTY (C{/dev/pts/N}).
    @param on_data: called with each chunk of output, on the reactor thread.
    @param on_closed: called once with a short reason when the PTY ends by itself.
    @raise ConsoleUnavailable: when the PTY cannot be opened (missing, permission denied) or
        the path is not a PTY follower (see L{open_pty}).
    """

    _log = Logger()

    def __init__(self, reactor, path, on_data, on_closed):
        super().__init__(reactor)
        self.path = path
        self._on_data = on_data
        self._on_closed = on_closed
        self._released = False
        self._fd = open_pty(path)
        try:
            tty.setraw(self._fd, termios.TCSANOW)
        except termios.error as e:
            os.close(self._fd)
            raise ConsoleUnavailable(f"{path} is not a terminal: {e.args[-1]}") from None
        self.connected = 1
        self.startReading()

    def fileno(self):
        return self._fd

    def __repr__(self):
        return f"<PtySource {self.path}>"

    # -- FileDescriptor ------------------------------------------------------------------------

    def doRead(self):
        return fdesc.readFromFD(self._fd, self._on_data)

    def writeSomeData(self, data):
        try:
            return os.write(self._fd, data)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return 0
            return e

    def connectionLost(self, reason):
        self.producer = None  # the hub owns its producer: never stopProducing() it
        super().connectionLost(reason)
        if self._released:
            return
        self._release()
        self._on_closed(f"serial PTY {self.path} closed")

    # -- IConsoleSource ----------------------------------------------------------------------

    # write(), registerProducer() and unregisterProducer() are FileDescriptor's: writes are
    # buffered and flushed when the PTY is writable; a registered streaming producer is paused
    # while more than bufferSize bytes wait.

    def registerProducer(self, producer, streaming):
        if not streaming:
            raise ValueError("PtySource only throttles streaming producers")
        super().registerProducer(producer, streaming)

    def close(self):
        if self._released:
            return
        self.producer = None  # the hub owns its producer: never stopProducing() it
        self.stopReading()
        self.stopWriting()
        self.disconnected = 1
        self.connected = 0
        self._release()

    def _release(self):
        self._released = True
        try:
            os.close(self._fd)
        except OSError:
            pass
