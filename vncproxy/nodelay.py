"""
Nagle's algorithm off on a console's TCP connections.

Console traffic is small interactive writes (a keystroke, its echo, a pointer move, a short
screen update). With Nagle on, a small write waits while earlier data is unacknowledged, and
behind a peer's delayed ACK that is up to 40 ms (Linux) per keystroke. Every connection a
session relays has it off: the viewer's (xvpvnc, native VNC, the console WebSocket: Debian 12's
twisted.web and Autobahn leave it on there) and QEMU's.
"""


def no_delay(transport):
    """
    Switch Nagle off on C{transport}'s TCP socket, looking through wrappers (TLS, the PROXY
    protocol) to the TCP transport; nothing for UNIX sockets or anything else without it.
    """
    for _ in range(4):
        if transport is None:
            return
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:  # a UNIX socket adopted by Twisted < 23 as a TCP transport
                pass
            return
        transport = getattr(transport, "transport", None)


__all__ = ["no_delay"]
