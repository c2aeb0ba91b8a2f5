"""
One error type for the HTTP API, one renderer, and bounded JSON body reading.
"""

import json


class ApiError(Exception):
    """
    Raised anywhere below a handler; rendered as C{{"error": {"code": N, "message": "..."}}}.

    The message is shown to the caller: it must never hold a secret.
    """

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def render_json(request, code, body):
    """
    Write a JSON response (status, headers, body) and return the bytes for C{render}.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"


def render_error(request, error):
    return render_json(request, error.code, {"error": {"code": error.code, "message": error.message}})


def read_json_object(request, max_bytes):
    """
    Read and decode the request body as one JSON object.

    @raise ApiError: 413 when the body is larger than C{max_bytes}, 400 when it is not a JSON
        object.
    """
    length = request.getHeader(b"content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ApiError(413, f"request body larger than {max_bytes} bytes")
    request.content.seek(0)
    raw = request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, f"request body larger than {max_bytes} bytes")
    if not raw.strip():
        raise ApiError(400, "request body must be a JSON object")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body
