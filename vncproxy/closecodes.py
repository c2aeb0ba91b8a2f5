"""
Why a console session ended: WebSocket close codes in the application range (4000-4999), each
with a short reason a UI can show. docs/api.md lists them; a test keeps the two in step.
"""

from enum import IntEnum


class CloseCode(IntEnum):
    TOKEN_INVALID = 4001
    ORIGIN_REFUSED = 4002
    LIMIT_REACHED = 4003
    TAKEN_OVER = 4004
    IDLE_TIMEOUT = 4005
    SESSION_TOO_LONG = 4006
    INSTANCE_STOPPED = 4007
    SERVICE_STOPPING = 4008
    CONSOLE_UNAVAILABLE = 4009
    CONSOLE_CLOSED = 4010
    PROTOCOL_ERROR = 4011
    RATE_LIMITED = 4012
    SLOW_VIEWER = 4013
    ENDED_BY_OPERATOR = 4014


REASONS = {
    CloseCode.TOKEN_INVALID: "token invalid",
    CloseCode.ORIGIN_REFUSED: "origin refused",
    CloseCode.LIMIT_REACHED: "limit reached",
    CloseCode.TAKEN_OVER: "taken over",
    CloseCode.IDLE_TIMEOUT: "idle timeout",
    CloseCode.SESSION_TOO_LONG: "session too long",
    CloseCode.INSTANCE_STOPPED: "instance stopped",
    CloseCode.SERVICE_STOPPING: "service stopping",
    CloseCode.CONSOLE_UNAVAILABLE: "console unavailable",
    CloseCode.CONSOLE_CLOSED: "console closed",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.RATE_LIMITED: "too many failed attempts",
    CloseCode.SLOW_VIEWER: "viewer too slow",
    CloseCode.ENDED_BY_OPERATOR: "ended by operator",
}


def reason_for(code, detail=None):
    """
    The close reason for C{code}, with an optional detail, cut to fit a close frame
    (123 bytes of UTF-8).
    """
    text = REASONS[CloseCode(code)]
    if detail:
        text = f"{text}: {detail}"
    encoded = text.encode("utf-8")[:123]
    return encoded.decode("utf-8", "ignore")
