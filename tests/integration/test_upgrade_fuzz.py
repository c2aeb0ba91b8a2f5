"""
Fuzzing the console listener's HTTP/WebSocket upgrade over real sockets: mangled request lines,
headers, keys, versions, origins, cookies and raw junk are answered with a clean HTTP status (or
a close), never a 500, a traceback in the log, or a hang.
"""

import base64
import socket

import pytest_twisted
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet import threads
from twisted.logger import globalLogPublisher

# 200 and 204: a plain request that is no upgrade reaches the web clients (the index at /, a
# page or file; the favicon is 204 where noVNC is not installed).
ALLOWED = {101, 200, 204, 400, 401, 403, 404, 405, 409, 426, 429, 501}

header_values = st.one_of(
    st.sampled_from(["websocket", "Upgrade", "13", "8", "binary", "base64, binary",
                     base64.b64encode(b"0123456789abcdef").decode(), "http://127.0.0.1",
                     "https://evil.example", "token=abc", "null", ""]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
request_parts = st.fixed_dictionaries({
    "method": st.sampled_from(["GET", "POST", "HEAD", "CONNECT", "G\x00T", ""]),
    "path": st.sampled_from(["/", "/websockify", "/websockify?token=", "/?token=x" * 3,
                             "/v1/instances/vm1/console?access_token=abc",
                             "/v1/instances/%00/console", "/nothing", "//", "*"])
    | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
    "version": st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", ""]),
    "headers": st.lists(st.tuples(
        st.sampled_from(["Host", "Upgrade", "Connection", "Sec-WebSocket-Key",
                         "Sec-WebSocket-Version", "Sec-WebSocket-Protocol", "Origin", "Cookie",
                         "Content-Length", "Transfer-Encoding"]), header_values), max_size=10),
})


def render(parts):
    lines = [f"{parts['method']} {parts['path']} {parts['version']}".strip()]
    lines += [f"{name}: {value}" for name, value in parts["headers"]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def exchange(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.settimeout(0.5)
        try:
            s.sendall(data)
            answer = b""
            while b"\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            return None
    return answer


@pytest_twisted.inlineCallbacks
def test_mangled_upgrades_get_clean_answers(proxy):
    """Hundreds of mangled upgrade requests and junk: each gets a contract status or a close, and nothing fails in the service."""
    port = int(proxy.ws_url.rsplit(":", 1)[1])
    failures = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=request_parts.map(render) | st.binary(max_size=200).map(lambda b: b + b"\r\n\r\n"))
    @example(request=b"GET / HTTP/2.0\r\n\r\n")  # Twisted 22.4 answered "HTTP/2.0 200 OK"
    def fuzz(request):
        answer = exchange(port, request)
        if answer:
            assert answer[:9] in (b"HTTP/1.1 ", b"HTTP/1.0 "), answer[:60]
            status = int(answer[9:12])
            assert status in ALLOWED, answer[:200]

    globalLogPublisher.addObserver(observe)
    try:
        yield threads.deferToThread(fuzz)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == []
