"""
One error type for the HTTP API, one renderer that answers in the format of the route's API
family, and bounded JSON body reading.

Each family's clients show a human message only when the error is in their own format:

    nova          {"itemNotFound": {"code": 404, "message": "..."}}      (Nova's fault names)
    ibm           {"errors": [{"code": "not_found", "message": "...", "more_info": "..."}],
                   "trace": "...", "status_code": 404}
    consoleproxy  {"error": {"code": 404, "message": "..."}}              (our own routes)

A refusal that has a WebSocket close code carries it as C{close_code} in every format, so that
a program can map it to a message. LXD's envelope (C{lxd}: C{{"type": "error", "error": "...",
"error_code": 404, ...}}) plugs in with L{register_family} from L{vncproxy.lxd.envelope}.
"""

import json
import uuid


class ApiError(Exception):
    """
    Raised anywhere below a handler; rendered in the route's family format by L{render_error}.

    The message is shown to the caller: it must never hold a secret.

    @ivar close_code: the WebSocket close code of the same refusal, or C{None}.
    """

    def __init__(self, code, message, close_code=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


# Nova's fault element per status (nova/api/openstack/wsgi.py); anything else is computeFault.
NOVA_FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}

# IBM Cloud's error codes per status (the platform's generic ones).
IBM_CODES = {
    400: "bad_request",
    401: "not_authorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    429: "too_many_requests",
    501: "not_implemented",
    503: "service_unavailable",
}
IBM_MORE_INFO = "/openapi.json"


def _ours(error, trace):
    body = {"code": error.code, "message": error.message}
    if error.close_code is not None:
        body["close_code"] = int(error.close_code)
    return {"error": body}


def _nova(error, trace):
    body = {"code": error.code, "message": error.message}
    if error.close_code is not None:
        body["close_code"] = int(error.close_code)
    return {NOVA_FAULT_NAMES.get(error.code, "computeFault"): body}


def _ibm(error, trace):
    item = {"code": IBM_CODES.get(error.code, "internal_error"), "message": error.message,
            "more_info": IBM_MORE_INFO}
    if error.close_code is not None:
        item["close_code"] = int(error.close_code)
    return {"errors": [item], "trace": trace, "status_code": error.code}


OURS = "consoleproxy"
_FAMILIES = {OURS: _ours, "nova": _nova, "ibm": _ibm}

# Path prefix -> the API family whose error format the path's clients read.
PREFIXES = (("/v2.1", "nova"), ("/v1/", "ibm"), ("/1.0/", "lxd"))
# Whole paths of Nova's: the version document (API listener); the serial and noVNC WebSockets
# of the URLs Nova's routes hand out (console listener).
NOVA_PATHS = ("/", "/websockify")


def family_of(path):
    """
    The API family of a request path (a known route or not), on either listener.
    """
    if path in NOVA_PATHS:
        return "nova"
    for prefix, family in PREFIXES:
        if path.startswith(prefix):
            return family
    return OURS


def register_family(name, body):
    """
    Answer the errors of family C{name} with C{body(error, trace)} -> a JSON-able object.
    """
    _FAMILIES[name] = body


def render_json(request, code, body):
    """
    Write a JSON response (status, headers, body) and return the bytes for C{render}.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"


def render_error(request, error, family=OURS):
    """
    Answer C{error} in C{family}'s format (our own for a family nobody registered).

    Every error gets a trace id, in the IBM body and in the C{X-Request-Id} header.
    """
    trace, body = error_document(error, family)
    request.setHeader(b"x-request-id", trace.encode("ascii"))
    return render_json(request, error.code, body)


def error_document(error, family=OURS):
    """
    A fresh trace id and C{error}'s body in C{family}'s format (for answers written without a
    request object, such as a refused oversized body).
    """
    trace = str(uuid.uuid4())
    return trace, _FAMILIES.get(family, _ours)(error, trace)


def error_message(body):
    """
    The (code, message) of an error body in any of the formats above (for tests and tools).
    """
    if "errors" in body:
        return body["status_code"], body["errors"][0]["message"]
    if body.get("type") == "error":  # LXD's envelope (vncproxy.lxd.envelope)
        return body["error_code"], body["error"]
    (fault,) = body.values()
    return fault["code"], fault["message"]


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
