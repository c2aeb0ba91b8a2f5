"""
The VNC server's ServerInit, read and checked before it reaches a viewer.  Sans-IO: after the
glue sent ClientInit, feed what the server sends to L{ServerInitReader.receive_data}; it emits
L{ServerInitReceived} (the message unchanged, relayed to the viewer, plus what followed it) or
L{HandshakeFailed} with the reason (a desktop name longer than
L{wire.MAX_DESKTOP_NAME_LENGTH<vncproxy.rfb.wire.MAX_DESKTOP_NAME_LENGTH>}, an impossible pixel
format), detected as soon as the 24-byte header is in, before the name is buffered.

States: C{AWAIT_SERVER_INIT}, then C{DONE} or C{FAILED}.
"""

from __future__ import annotations

import enum

from vncproxy.rfb import wire
from vncproxy.rfb._machine import HandshakeMachine
from vncproxy.rfb.events import ServerInitReceived

__all__ = ["ServerInitReader", "ServerInitState"]


class ServerInitState(enum.Enum):
    AWAIT_SERVER_INIT = 1
    DONE = 2
    FAILED = 3


class ServerInitReader(HandshakeMachine):
    """
    Reads one ServerInit; see the module docstring.
    """

    _DONE = ServerInitState.DONE
    _FAILED = ServerInitState.FAILED

    def __init__(self) -> None:
        super().__init__(ServerInitState.AWAIT_SERVER_INIT)
        self._handlers = {ServerInitState.AWAIT_SERVER_INIT: self._on_server_init}

    def _on_server_init(self) -> bool:
        message = self._take_parsed(wire.parse_server_init)
        if message is None:
            return False
        self.state = ServerInitState.DONE
        self._emit(ServerInitReceived(message, self._take_leftover()))
        return True
