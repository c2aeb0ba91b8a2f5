"""
Write-through for the relay's TCP transports: bytes go to the socket inside C{write()} when
nothing is queued, instead of on the reactor's next turn.

Twisted's transports queue every write and send it when the reactor next polls the socket
writable (Twisted issue #5303 proposes writing at once when Nagle is off, which is our case).
For a relay that costs, per message and per direction, one more reactor turn: an epoll_wait
that returns at once, two epoll_ctl calls and Twisted's per-event logging context; measured
with C{bench/} it was a third of the service's CPU per keystroke round trip.

What changes, and what does not:
    - only when the transport's own buffers are empty: otherwise the bytes are queued behind
      what is waiting, so order is kept;
    - what the socket does not take (C{EAGAIN}, or part of the bytes) is queued the ordinary
      way, so flow control is Twisted's: the producer registered with the transport is paused
      when its buffer passes C{bufferSize}, resumed when it drains;
    - a socket error is not raised here: the bytes are queued and Twisted's next write
      attempt meets the error and loses the connection as it always does;
    - TLS transports (VeNCrypt after C{startTLS}, C{ssl:} listeners) are left alone: their
      bytes must go through the TLS layer.
"""

from twisted.internet import tcp


def plain_socket(transport):
    """
    Whether C{transport} is a TCP or UNIX socket connection of Twisted's, without TLS: one
    whose socket may be written (or spliced into, see L{vncproxy.relay.zerocopy}) directly.
    """
    return isinstance(transport, tcp.Connection) and not transport.TLS


def nothing_queued(transport):
    """
    Whether bytes put in C{transport}'s socket now keep their order: nothing waits in
    Twisted's buffers, and the connection is open, not closing, and not carrying TLS.
    """
    return (not transport.dataBuffer and not transport._tempDataBuffer and transport.connected
            and not transport.disconnecting and not transport.TLS)


def enable(transport):
    """
    Make C{transport.write} write through when it can (see the module docstring).

    @param transport: a connected transport.
    @return: C{True} when enabled; C{False} for transports it does not apply to (not a TCP
        or UNIX socket connection of Twisted's, or carrying TLS).
    """
    if not plain_socket(transport):
        return False
    if getattr(transport, "_write_through", False):
        return True
    queue = transport.write
    send = transport.socket.send

    def write(data):
        if type(data) is bytes and nothing_queued(transport):
            try:
                sent = send(data)
            except OSError:
                sent = 0  # EAGAIN or an error: the queued write finds out, as Twisted does
            if sent == len(data):
                return
            data = data[sent:]
        queue(data)

    transport.write = write
    transport._write_through = True
    return True


__all__ = ["enable", "nothing_queued", "plain_socket"]
