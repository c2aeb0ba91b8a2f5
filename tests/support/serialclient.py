"""
Blocking serial console clients for tests and the benchmark: a WebSocket client (as a browser
terminal or websocat would be) and a tiny shell that plays the guest on a PTY.
"""

import os
import select
import socket
import threading
import time

import websocket

from tests.support.viewer import close_status, open_websocket


class Closed(Exception):
    """
    The server closed the WebSocket; C{args[0]} is (code, reason).
    """


class SerialClient:
    """
    @ivar received: every byte of console output received so far.
    @ivar close: (code, reason) once the server closed the connection, else None.
    """

    def __init__(self, url, origin=None, timeout=20):
        self.ws = open_websocket(url, origin=origin, timeout=timeout)
        self.received = bytearray()
        self.close = None

    def type(self, data):
        """Input as a binary frame."""
        self.ws.send_binary(data)

    def type_text(self, text):
        """Input as a text frame (websocat's default)."""
        self.ws.send(text)

    def _recv(self, timeout):
        self.ws.settimeout(timeout)
        try:
            opcode, data = self.ws.recv_data(control_frame=False)
        except (websocket.WebSocketTimeoutException, socket.timeout):
            return False
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            if self.close is None:
                self.close = (None, "connection dropped")
            raise Closed(self.close) from None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.close = close_status(data) or (None, "")
            raise Closed(self.close)
        self.received += data
        return True

    def read_until(self, needle, timeout=10.0, since=0):
        """Read until C{needle} appears in the output after offset C{since}; return all output."""
        deadline = time.monotonic() + timeout
        while needle not in self.received[since:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{needle!r} not received within {timeout}s; got "
                                   f"{bytes(self.received[-300:])!r}")
            self._recv(min(left, 0.5))
        return bytes(self.received)

    def read_for(self, seconds):
        """Read whatever arrives during C{seconds}."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._recv(min(left, 0.2))
        return bytes(self.received)

    def wait_closed(self, timeout=10.0):
        """Read until the server closes; return (code, reason)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._recv(0.2)
        except Closed as e:
            return e.args[0]
        raise TimeoutError(f"not closed within {timeout}s")

    def disconnect(self):
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass


class FakeShell:
    """
    A guest shell on the leader side of a L{tests.support.ptypair.PtyPair}, in a thread: echoes
    what is typed and answers C{echo WORDS} with WORDS and a new prompt.

    @ivar typed: every byte the service sent toward the guest.
    """

    def __init__(self, pty, prompt=b"[guest /]# "):
        self.pty = pty
        self.prompt = prompt
        self.typed = bytearray()
        self._line = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-shell", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def prints(self, data):
        """The guest prints C{data} (waits while nobody reads the PTY, as a real UART would)."""
        with self._lock:
            self.pty.guest_prints(data, timeout=30)

    def _run(self):
        while not self._stop.is_set():
            fd = self.pty.leader
            if fd is None:
                return
            try:
                r, _, _ = select.select([fd], [], [], 0.05)
                if not r:
                    continue
                data = os.read(fd, 4096)
            except OSError:
                return
            self.typed += data
            for byte in data:
                char = bytes([byte])
                if char == b"\r":
                    line, self._line = bytes(self._line), bytearray()
                    answer = b"\r\n"
                    if line.startswith(b"echo "):
                        answer += line[5:] + b"\r\n"
                    self.prints(answer + self.prompt)
                else:
                    self._line += char
                    self.prints(char)  # the shell echoes what it reads
