"""
Drives the real `lxc` (Debian's lxd-client) as a user would: its own configuration directory
(LXD_CONF, HOME), optionally as another user, and `lxc console` on a pseudo-terminal (it puts
its stdin in raw mode and reads the terminal size).
"""

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import termios
import time

LXC = shutil.which("lxc") or "/usr/bin/lxc"


class Lxc:
    """
    @param home: a directory for this user's lxc configuration (created).
    @param uid: run as this uid/gid (None: as we are).
    """

    def __init__(self, home, uid=None, gid=None):
        self.home = str(home)
        self.conf = os.path.join(self.home, "lxc")
        os.makedirs(self.conf, exist_ok=True)
        self.uid, self.gid = uid, gid
        if uid is not None:
            for path in (self.home, self.conf):
                os.chown(path, uid, gid)
        self.env = dict(os.environ, HOME=self.home, LXD_CONF=self.conf, LANG="C.UTF-8")

    def _argv(self, args):
        prefix = []
        if self.uid is not None:
            prefix = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                      "--"]
        return prefix + [LXC, *args]

    def run(self, *args, timeout=60):
        """
        @return: C{(returncode, stdout + stderr as text)}.
        """
        done = subprocess.run(self._argv(args), env=self.env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)
        return done.returncode, done.stdout.decode("utf-8", "replace")

    def console(self, target, *args):
        return LxcConsole(self._argv(["console", target, *args]), self.env)


class LxcConsole:
    """
    `lxc console` on a PTY of 100x30: what it prints is collected in C{received}.
    """

    def __init__(self, argv, env):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.process = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave,
                                        start_new_session=True)
        os.close(slave)
        self.master = master
        self.received = b""

    def _pump(self, timeout):
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the process closed the terminal
                return False
            if not data:
                return False
            self.received += data
        return True

    def read_until(self, needle, timeout=30, since=0):
        deadline = time.monotonic() + timeout
        while needle not in self.received[since:]:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} not seen; got {self.received[-400:]!r}"
            if not self._pump(min(left, 0.2)) and self.process.poll() is not None:
                raise AssertionError(f"lxc exited ({self.process.returncode}) before "
                                     f"{needle!r}; got {self.received[-400:]!r}")
        return self.received

    def type(self, data):
        os.write(self.master, data)

    def detach(self):
        """
        ctrl+a then q, as a person types them: lxc looks at the first byte of each read only,
        so the two must not arrive in one read.
        """
        self.type(b"\x01")
        time.sleep(0.3)
        self.type(b"q")

    def wait(self, timeout=20):
        """
        @return: the exit status, after collecting the rest of the output.
        """
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"lxc still running: {self.received[-400:]!r}"
            self._pump(0.1)
        while self._pump(0.05):
            pass
        return self.process.returncode

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
