"""
The guests behind the soak's serial domains: one PTY pair each, whose leader side this process
holds and drives on the asyncio loop, printing a banner and then echoing what the service types
(as a guest's shell would on its UART).
"""

import os

from tests.support.ptypair import PtyPair


class GuestEcho:
    """
    The guest side of the serial domains: each prints L{BANNER} once, then whatever the
    service types on its PTY is printed back.
    """

    BANNER = b"bench guest ready\n"

    def __init__(self, count):
        self.ptys = [PtyPair() for _ in range(count)]
        self._pending = {}

    def start(self, loop):
        for pty in self.ptys:
            self._pending[pty.leader] = bytearray(self.BANNER)
            loop.add_reader(pty.leader, self._readable, loop, pty.leader)
            self._flush(loop, pty.leader)

    def _readable(self, loop, fd):
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            loop.remove_reader(fd)
            return
        self._pending[fd] += data
        self._flush(loop, fd)

    def _flush(self, loop, fd):
        pending = self._pending[fd]
        try:
            n = os.write(fd, pending)
        except BlockingIOError:
            n = 0
        del pending[:n]
        if pending:
            loop.add_writer(fd, self._flush, loop, fd)
        else:
            loop.remove_writer(fd)

    def stop(self, loop):
        for pty in self.ptys:
            if pty.leader is not None:
                loop.remove_reader(pty.leader)
                loop.remove_writer(pty.leader)

    def close(self):
        for pty in self.ptys:
            pty.close()
