"""
The benchmark's floor: a bare TCP relay in Python, no framework, no WebSocket, no token.

One process, one selectors loop, non-blocking sockets; every accepted connection is joined to
a new connection to the backend and bytes are copied both ways, a side's reading paused while
the other side has bytes waiting. It does nothing a console proxy must do (no handshake, no
authentication, no limits, no logs): its figures show what a Python process on this machine
costs by itself for relaying, so that the proxy's figures can be read against it.

Run: C{python -m bench.barerelay BACKEND_PORT}; the first line of stdout is its port.
"""

import selectors
import socket
import sys

CHUNK = 256 * 1024


class _Side:
    __slots__ = ("sock", "peer", "pending")

    def __init__(self, sock):
        self.sock = sock
        self.peer = None
        self.pending = b""


def _events(side):
    # Read only while the peer has nothing waiting; write only while we have something.
    events = 0 if side.peer.pending else selectors.EVENT_READ
    return events | (selectors.EVENT_WRITE if side.pending else 0)


def _update(sel, side):
    events = _events(side)
    try:
        registered = sel.get_key(side.sock).events
    except KeyError:
        registered = 0
    if events == registered:
        return
    if not events:
        sel.unregister(side.sock)
    elif not registered:
        sel.register(side.sock, events, side)
    else:
        sel.modify(side.sock, events, side)


def _close(sel, side):
    for s in (side, side.peer):
        try:
            sel.unregister(s.sock)
        except (KeyError, ValueError):
            pass
        s.sock.close()


def _flush(side):
    if side.pending:
        try:
            sent = side.sock.send(side.pending)
        except BlockingIOError:
            return
        side.pending = side.pending[sent:]


def serve(listener, backend_port):
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, mask in sel.select():
            if key.data is None:
                client, _ = listener.accept()
                backend = socket.create_connection(("127.0.0.1", backend_port))
                a, b = _Side(client), _Side(backend)
                a.peer, b.peer = b, a
                for side in (a, b):
                    side.sock.setblocking(False)
                    side.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(side.sock, selectors.EVENT_READ, side)
                continue
            side = key.data
            try:
                if mask & selectors.EVENT_WRITE:
                    _flush(side)
                if mask & selectors.EVENT_READ and not side.peer.pending:
                    data = side.sock.recv(CHUNK)
                    if not data:
                        _close(sel, side)
                        continue
                    side.peer.pending = memoryview(data)  # what is left is sliced, not copied
                    _flush(side.peer)
                _update(sel, side)
                _update(sel, side.peer)
            except (ConnectionError, OSError):
                _close(sel, side)


def main():
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    print(listener.getsockname()[1], flush=True)
    serve(listener, int(sys.argv[1]))


if __name__ == "__main__":
    main()
