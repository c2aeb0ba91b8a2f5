"""
A blocking client for the token API (urllib), for tests.
"""

import json
import urllib.error
import urllib.request


def call(url, method="GET", body=None, key=None, headers=None, raw=None):
    """
    @return: (status, decoded JSON or raw bytes) — HTTP errors are returned, not raised.
    """
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("X-Auth-Token", key)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload, ctype = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as e:
        status, payload, ctype = e.code, e.read(), e.headers.get_content_type()
    if ctype == "application/json":
        return status, json.loads(payload)
    return status, payload


def grant(api_url, key, instance, console_type="vnc", **extra):
    return call(f"{api_url}/v1/instances/{instance}/console_access_token", "POST",
                {"console_type": console_type, **extra}, key=key)


def wait_until_healthy(api_url, process, log, timeout=30, interval=0.1, what="consoleproxy"):
    """
    Wait until the service started as C{process} answers C{GET /healthz} with 200.

    @param log: a callable returning the service's output, quoted in the error.
    @raise RuntimeError: when the process exits first, or C{timeout} seconds pass.
    """
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log()}")
        try:
            with urllib.request.urlopen(f"{api_url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{what} did not answer /healthz within {timeout}s:\n{log()}")
