"""
Plumbing shared by the RFB handshake machines: the receive buffer, the
queue of outgoing bytes, the per-state handler loop and failing closed.
"""

from __future__ import annotations

import enum
from typing import Callable, Union

from vncproxy.rfb import wire
from vncproxy.rfb.events import (
    AuthResponse,
    ClientInitReceived,
    HandshakeFailed,
    SecurityAccepted,
    ServerInitReceived,
    StartTLS,
)

Event = Union[AuthResponse, ClientInitReceived, HandshakeFailed, SecurityAccepted,
              ServerInitReceived, StartTLS]


class HandshakeMachine:
    """
    Base class: subclasses set C{self.state}, C{_DONE}, C{_FAILED} and
    C{_handlers}, a mapping from each non-terminal state to a method that
    consumes what it can from the buffer and returns C{True} if it made
    progress (C{False} means "need more data").
    """

    _DONE: enum.Enum
    _FAILED: enum.Enum
    _handlers: dict[enum.Enum, Callable[[], bool]]

    def __init__(self, initial_state: enum.Enum) -> None:
        self.state = initial_state
        self._buffer = bytearray()
        self._outgoing = bytearray()
        self._events: list[Event] = []

    # -- public ------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """
        Feed bytes from the peer, in chunks of any size.

        @param data: the bytes received (may be empty).
        @return: the events completed by these bytes, often C{[]}.  Once the
            machine is DONE or FAILED it ignores input and returns C{[]}.
        """
        if self._finished():
            return []
        self._buffer += data
        return self._run()

    def data_to_send(self) -> bytes:
        """
        @return: the bytes queued for the peer (and forget them).
        """
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    # -- for subclasses ----------------------------------------------------

    def _finished(self) -> bool:
        return self.state in (self._DONE, self._FAILED)

    def _run(self) -> list[Event]:
        """
        Run the handler of the current state until it needs more data or
        the handshake ends, then enforce the buffer cap.

        @return: the events produced (and forget them).
        """
        try:
            while not self._finished() and self._handlers[self.state]():
                pass
        except wire.ProtocolError as error:
            self._fail(f"protocol error: {error}")
        if not self._finished() and len(self._buffer) > wire.MAX_BUFFERED:
            self._fail(
                f"protocol error: more than {wire.MAX_BUFFERED} bytes buffered "
                "during the handshake"
            )
        events, self._events = self._events, []
        return events

    def _send(self, data: bytes) -> None:
        self._outgoing += data

    def _take(self, count: int) -> bytes | None:
        """
        @return: the next C{count} buffered bytes (consumed), or C{None}.
        """
        if len(self._buffer) < count:
            return None
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _take_u8(self) -> int | None:
        value = wire.parse_u8(self._buffer)
        if value is not None:
            del self._buffer[:1]
        return value

    def _take_u32(self) -> int | None:
        value = wire.parse_u32(self._buffer)
        if value is not None:
            del self._buffer[:4]
        return value

    def _take_parsed(self, parser: Callable[[bytearray], tuple[object, int] | None]):
        """
        @param parser: a C{wire.parse_*} function returning C{(value,
            consumed)} or C{None}.
        @return: the parsed value (its bytes consumed), or C{None}.
        """
        result = parser(self._buffer)
        if result is None:
            return None
        value, consumed = result
        del self._buffer[:consumed]
        return value

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _fail(self, reason: str) -> None:
        """
        Go to FAILED for good, emitting the one L{HandshakeFailed}.  Bytes
        already queued for the peer stay queued.
        """
        self.state = self._FAILED
        self._buffer.clear()
        self._emit(HandshakeFailed(reason))

    def _take_leftover(self) -> bytes:
        leftover = bytes(self._buffer)
        self._buffer.clear()
        return leftover
