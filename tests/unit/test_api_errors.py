"""
The error renderer: one ApiError, answered in the format of the route's API family, with the
close code where the refusal has one; and the family of every kind of path.
"""

import json

import pytest
from twisted.web.test.requesthelper import DummyRequest

from vncproxy.closecodes import CloseCode
from vncproxy.web import errors
from vncproxy.web.errors import ApiError, error_message, family_of, register_family, render_error


def rendered(error, family):
    request = DummyRequest([])
    body = json.loads(render_error(request, error, family))
    trace = request.responseHeaders.getRawHeaders(b"x-request-id")[0].decode()
    return request.responseCode, body, trace


@pytest.mark.parametrize("code, name", [
    (400, "badRequest"), (401, "unauthorized"), (403, "forbidden"), (404, "itemNotFound"),
    (405, "badMethod"), (409, "conflictingRequest"), (413, "overLimit"), (429, "overLimit"),
    (501, "notImplemented"), (503, "serviceUnavailable"), (500, "computeFault"),
    (406, "computeFault"),
])
def test_nova_fault_names(code, name):
    status, body, _ = rendered(ApiError(code, "why"), "nova")
    assert (status, body) == (code, {name: {"code": code, "message": "why"}})


def test_ibm_errors_carry_a_trace_that_the_header_repeats():
    status, body, trace = rendered(ApiError(404, "instance x not found"), "ibm")
    assert status == 404
    assert body == {"errors": [{"code": "not_found", "message": "instance x not found",
                                "more_info": "/openapi.json"}],
                    "trace": trace, "status_code": 404}
    assert rendered(ApiError(404, "x"), "ibm")[2] != trace  # one trace per error


@pytest.mark.parametrize("family", ["nova", "ibm", "consoleproxy", "lxd"])
def test_close_code_is_kept_in_every_family(family):
    _, body, _ = rendered(ApiError(409, "serial console in use", CloseCode.LIMIT_REACHED), family)
    flat = json.dumps(body)
    assert '"close_code": 4003' in flat
    assert error_message(body) == (409, "serial console in use")


def test_unregistered_family_answers_in_our_format_and_a_registered_one_in_its_own(monkeypatch):
    assert rendered(ApiError(404, "gone"), "example")[1] == {
        "error": {"code": 404, "message": "gone"}}
    monkeypatch.setattr(errors, "_FAMILIES", dict(errors._FAMILIES))
    register_family("example", lambda error, trace: {"type": "error", "error": error.message,
                                                     "error_code": error.code})
    assert rendered(ApiError(404, "gone"), "example")[1] == {"type": "error", "error": "gone",
                                                             "error_code": 404}


@pytest.mark.parametrize("path, family", [
    ("/", "nova"), ("/v2.1", "nova"), ("/v2.1/", "nova"), ("/v2.1/p/servers/x/action", "nova"),
    ("/v1/instances/x/console_access_token", "ibm"), ("/v1/nothing", "ibm"),
    ("/1.0/instances/x/console", "lxd"), ("/healthz", "consoleproxy"),
    ("/nothing", "consoleproxy"), ("/v2.10", "nova"), ("/websockify", "nova"),
    ("/v1/instances/x/console", "ibm"), ("/websockify/x", "consoleproxy"),
])
def test_family_of_paths(path, family):
    assert family_of(path) == family
