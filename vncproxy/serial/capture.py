"""
L{ConsoleLog}: everything one instance printed on its serial console, in files that rotate by
size and outlive the service.

Layout, for instance UUID U under the log directory::

    U.log      the current file, appended to; at most max_bytes
    U.log.1    the previous one (rotated when U.log reached max_bytes)
    ...
    U.log.K    the oldest kept (K = max_files); older ones are deleted

So an instance never takes more than C{max_bytes * (max_files + 1)} bytes of disk. Output is
raw bytes exactly as the guest sent them (escape sequences included), written without any
buffering in this process, so that a crash or restart of the service loses nothing written so
far and a new start of the service appends to the same files.

Files are 0600 and the directory 0700: a console can show secrets.
"""

import os

from twisted.logger import Logger

_FILE_MODE = 0o600
_DIR_MODE = 0o700


class ConsoleLog:
    """
    @param directory: where the files live (created on the first write).
    @param name: the file name stem (the instance UUID).
    @param max_bytes: size at which the current file is rotated.
    @param max_files: how many rotated files to keep.
    """

    _log = Logger()

    def __init__(self, directory, name, max_bytes, max_files):
        if max_bytes <= 0 or max_files < 0:
            raise ValueError("max_bytes must be positive and max_files not negative")
        self.directory = directory
        self.path = os.path.join(directory, f"{name}.log")
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._fd = None
        self._size = 0
        self._failing = False

    def __repr__(self):
        return f"<ConsoleLog {self.path}>"

    # -- writing -------------------------------------------------------------------------------

    def write(self, data):
        """
        Append C{data}, rotating as often as needed so that no file exceeds C{max_bytes}.

        Never raises: a failing disk is logged (once until it works again) and the bytes are
        dropped from the log only; the console itself goes on.
        """
        data = memoryview(data)
        try:
            while data:
                if self._fd is None:
                    self._open()
                room = self.max_bytes - self._size
                if room <= 0:
                    self._rotate()
                    continue
                part = data[:room]
                written = os.write(self._fd, part)
                self._size += written
                data = data[written:]
        except OSError as e:
            self._close_fd()
            if not self._failing:
                self._failing = True
                self._log.error("cannot write serial log {path}: {error}", path=self.path,
                                error=e.strerror)
            return
        if self._failing:
            self._failing = False
            self._log.info("writing serial log {path} again", path=self.path)

    def close(self):
        """
        Close the current file (a later L{write} reopens it). The files stay.
        """
        self._close_fd()

    def _open(self):
        os.makedirs(self.directory, mode=_DIR_MODE, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     _FILE_MODE)
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def _close_fd(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _rotated(self, n):
        return f"{self.path}.{n}"

    def _rotate(self):
        self._close_fd()
        if self.max_files == 0:
            os.truncate(self.path, 0)
        else:
            _remove(self._rotated(self.max_files))
            for n in range(self.max_files - 1, 0, -1):
                if os.path.exists(self._rotated(n)):
                    os.replace(self._rotated(n), self._rotated(n + 1))
            os.replace(self.path, self._rotated(1))
        self._open()

    # -- reading and clearing (the log API) ---------------------------------------------------

    def files(self):
        """
        The existing files, oldest first.
        """
        paths = [self._rotated(n) for n in range(self.max_files, 0, -1)] + [self.path]
        # Leftovers from a larger log_files setting count too, oldest first.
        extra, n = [], self.max_files + 1
        while os.path.exists(self._rotated(n)):
            extra.insert(0, self._rotated(n))
            n += 1
        return [p for p in extra + paths if os.path.exists(p)]

    def size(self):
        """
        Bytes held in all files.
        """
        return sum(_size_of(p) for p in self.files())

    def tail(self, limit=None):
        """
        The last C{limit} bytes of the log (all of it when C{limit} is C{None}), across
        rotated files.
        """
        if limit is not None and limit <= 0:
            return b""
        parts, wanted = [], limit
        for path in reversed(self.files()):
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if wanted is not None and size > wanted:
                        f.seek(size - wanted)
                    data = f.read() if wanted is None else f.read(wanted)
            except FileNotFoundError:
                continue
            parts.append(data)
            if wanted is not None:
                wanted -= len(data)
                if wanted <= 0:
                    break
        return b"".join(reversed(parts))

    def clear(self):
        """
        Delete everything logged so far; later output starts a fresh log.
        """
        self._close_fd()
        for path in self.files():
            if path == self.path:
                os.truncate(path, 0)
            else:
                _remove(path)
        self._size = 0


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _size_of(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
