"""
The viewer side of the RFB 3.8 handshake with security None, written once (L{_rfb_steps}, a
sans-IO generator) and driven by both bench clients: L{rfb_handshake} on a blocking
L{bench.connections.SyncConn}, L{arfb_handshake} on an asyncio L{bench.connections.AsyncConn}.
Each returns the ServerInit message, after which the backend's command stream follows (see
L{bench.backend}).
"""

import struct


class RfbError(Exception):
    """
    The RFB handshake failed.
    """



def _rfb_steps():
    """
    A generator driving the viewer side of RFB 3.8 with security None: it yields
    C{("read", n)} or C{("write", data)} and is sent the bytes read.
    """
    version = yield ("read", 12)
    if not version.startswith(b"RFB 003."):
        raise RfbError(f"not an RFB server: {version!r}")
    yield ("write", b"RFB 003.008\n")
    count = (yield ("read", 1))[0]
    if count == 0:
        length = struct.unpack("!I", (yield ("read", 4)))[0]
        raise RfbError("refused: " + (yield ("read", length)).decode("utf-8", "replace"))
    types = yield ("read", count)
    if 1 not in types:
        raise RfbError(f"security None not offered: {list(types)}")
    yield ("write", b"\x01")
    if (yield ("read", 4)) != b"\x00\x00\x00\x00":
        length = struct.unpack("!I", (yield ("read", 4)))[0]
        raise RfbError("security failed: " + (yield ("read", length)).decode("utf-8", "replace"))
    yield ("write", b"\x01")  # ClientInit, shared
    head = yield ("read", 24)
    name = yield ("read", struct.unpack("!I", head[20:24])[0])
    return head + name


def rfb_handshake(conn):
    steps = _rfb_steps()
    value = None
    try:
        while True:
            op, arg = steps.send(value)
            if op == "read":
                value = conn.recv_exactly(arg)
            else:
                conn.send(arg)
                value = None
    except StopIteration as done:
        return done.value


async def arfb_handshake(conn):
    steps = _rfb_steps()
    value = None
    try:
        while True:
            op, arg = steps.send(value)
            if op == "read":
                value = await conn.read_exactly(arg)
            else:
                conn.write(arg)
                value = None
    except StopIteration as done:
        return done.value

