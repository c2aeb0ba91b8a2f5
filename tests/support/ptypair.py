"""
A real PTY pair standing in for a QEMU serial port, for tests.

The test plays QEMU on the leader side (what the guest prints is written there; what the
service types is read there); the code under test opens the follower path, as the service
opens C{/dev/pts/N}.

    pty = PtyPair()
    source = PtySource(reactor, pty.path, on_data, on_closed)
    pty.guest_prints(b"hello\\r\\n")
    pump(source)                      # synchronous: select() + doRead() until quiet
    pty.typed(expect=5)               # what the service wrote toward the guest
"""

import errno
import os
import select
import time
import tty


class PtyPair:
    def __init__(self):
        self.leader, self.follower = os.openpty()
        tty.setraw(self.follower)
        os.set_blocking(self.leader, False)
        self.path = os.ttyname(self.follower)

    def guest_prints(self, data, timeout=5.0):
        """
        Write C{data} as guest output (waits while the PTY's buffer is full).
        """
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                n = os.write(self.leader, view)
            except BlockingIOError:
                n = 0
            if n == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(view)} bytes could not be written")
                select.select([], [self.leader], [], 0.05)
            view = view[n:]

    def try_print(self, data):
        """
        Write what fits without waiting; return how many bytes went in.
        """
        try:
            return os.write(self.leader, data)
        except BlockingIOError:
            return 0

    def typed(self, expect=None, timeout=2.0):
        """
        What the service wrote toward the guest: at least C{expect} bytes when given (else
        whatever arrives within a short wait).
        """
        out = b""
        deadline = time.monotonic() + (timeout if expect else 0.2)
        while time.monotonic() < deadline and (expect is None or len(out) < expect):
            r, _, _ = select.select([self.leader], [], [], 0.05)
            if r:
                try:
                    out += os.read(self.leader, 65536)
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EIO):
                        break
                    raise
        return out

    def hang_up(self):
        """
        Close the leader side, as QEMU does when it exits.
        """
        if self.leader is not None:
            os.close(self.leader)
            self.leader = None

    def close(self):
        self.hang_up()
        if self.follower is not None:
            os.close(self.follower)
            self.follower = None


def print_through(pty, source, data):
    """
    The guest prints C{data} while the source reads it: as much as the PTY takes, then a pump,
    until all of it went through (the PTY's own buffer is only a few KB).
    """
    view = memoryview(data)
    while view:
        n = pty.try_print(view)
        view = view[n:]
        pump(source, quiet=0.01, first=0.2)


def pump(source, quiet=0.05, first=1.0):
    """
    Feed a L{vncproxy.serial.pty.PtySource} synchronously (no reactor): read until nothing more
    arrives for C{quiet} seconds (waiting up to C{first} for the first byte), and flush its
    pending writes.

    @return: the number of doRead() calls that returned data or an end.
    """
    reads, wait = 0, first
    while not source.disconnected:
        fd = source.fileno()
        writing = bool(source._tempDataBuffer or source.dataBuffer)
        r, w, _ = select.select([fd], [fd] if writing else [], [], wait)
        if not r and not w:
            break
        if w:
            result = source.doWrite()
            if result:
                source.connectionLost(result)
                break
        if r:
            reads += 1
            result = source.doRead()
            if result:
                from twisted.python.failure import Failure

                source.connectionLost(Failure(result))
                break
        wait = quiet
    return reads
