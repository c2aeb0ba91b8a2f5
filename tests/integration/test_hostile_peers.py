"""
Hostile peers over real sockets: request bodies over the bound are refused with 413 before they
are read, WebSocket messages over the bound (whole or in many small fragments) end with close
code 1009, and the service stays healthy after each.
"""

import json
import socket
import time

import pytest_twisted
import websocket
from twisted.internet import threads

from tests.support import api
from tests.support.viewer import RfbViewer, WebSocketPipe, open_websocket, until_closed
from vncproxy.web.errors import error_message
from vncproxy.web.site import MAX_BODY
from vncproxy.web.websocket import MAX_MESSAGE

in_thread = threads.deferToThread


def port_of(url):
    return int(url.rsplit(":", 1)[1])


def read_answer(sock, timeout=3):
    sock.settimeout(timeout)
    answer = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return answer


def grant_path(proxy):
    return "/v1/instances/vm1/console_access_token"


@pytest_twisted.inlineCallbacks
def test_announced_huge_body_is_refused_before_it_is_sent(proxy):
    """A Content-Length of 1 GB gets 413 with a JSON error at once, without waiting for the body."""
    def scenario():
        with socket.create_connection(("127.0.0.1", port_of(proxy.api_url))) as s:
            s.sendall((f"POST {grant_path(proxy)} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
                       f"{proxy.key}\r\nContent-Type: application/json\r\n"
                       "Content-Length: 1000000000\r\n\r\n").encode() + b'{"console_type": ')
            started = time.monotonic()
            answer = read_answer(s)
            return answer, time.monotonic() - started
    answer, waited = yield in_thread(scenario)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    document = json.loads(body)  # IBM's error format: the path is an IBM route
    assert document["errors"][0]["code"] == "request_too_large"
    assert error_message(document) == (413, f"request body larger than {MAX_BODY} bytes")
    assert waited < 2


@pytest_twisted.inlineCallbacks
def test_endless_chunked_body_is_cut_at_the_bound(proxy):
    """A chunked body growing past 64 KiB is answered 413 and closed; the rest is never read."""
    def scenario():
        with socket.create_connection(("127.0.0.1", port_of(proxy.api_url))) as s:
            s.sendall((f"POST {grant_path(proxy)} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
                       f"{proxy.key}\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
            sent = 0
            try:
                for _ in range(2000):  # up to 8 MiB
                    s.sendall(b"1000\r\n" + b" " * 4096 + b"\r\n")
                    sent += 4096
            except (BrokenPipeError, ConnectionResetError):
                pass
            return read_answer(s), sent
    answer, sent = yield in_thread(scenario)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert sent < 8 * 1024 * 1024  # the server stopped taking it
    status, _ = yield in_thread(api.call, f"{proxy.api_url}/healthz")
    assert status == 200


def open_console(proxy):
    _, body = api.grant(proxy.api_url, proxy.key, "vm1")
    ws = open_websocket(body["href"].replace(proxy.service.ctx.config.websocket_base_url,
                                             proxy.ws_url))
    viewer = RfbViewer(WebSocketPipe(ws))
    viewer.handshake()
    return ws, viewer


def close_code(ws):
    return until_closed(WebSocketPipe(ws))


def still_healthy(proxy):
    ws, viewer = open_console(proxy)
    rects = viewer.framebuffer_update()
    ws.close()
    return bool(rects)


@pytest_twisted.inlineCallbacks
def test_oversized_websocket_message_is_closed_with_1009(proxy):
    """One WebSocket message over 1 MiB ends the console with close code 1009; others still work."""
    def scenario():
        ws, _ = open_console(proxy)
        try:
            ws.send_binary(b"\0" * (MAX_MESSAGE + 1))
        except (BrokenPipeError, ConnectionResetError):
            pass
        code = close_code(ws)
        return code, still_healthy(proxy)
    code, healthy = yield in_thread(scenario)
    assert code is not None and code[0] == 1009
    assert healthy


@pytest_twisted.inlineCallbacks
def test_many_small_fragments_are_bounded_too(proxy):
    """A message sent as thousands of 1 KiB fragments is closed with 1009 once it passes 1 MiB."""
    def scenario():
        ws, _ = open_console(proxy)
        fragment = b"\0" * 1024
        sent = 0
        try:
            ws.send_frame(websocket.ABNF.create_frame(fragment, websocket.ABNF.OPCODE_BINARY,
                                                      fin=0))
            for _ in range(4 * 1024):  # up to 4 MiB, never finished
                ws.send_frame(websocket.ABNF.create_frame(fragment, websocket.ABNF.OPCODE_CONT,
                                                          fin=0))
                sent += len(fragment)
        except (BrokenPipeError, ConnectionResetError, websocket.WebSocketException):
            pass
        code = close_code(ws)
        return code, sent, still_healthy(proxy)
    code, sent, healthy = yield in_thread(scenario)
    assert code is not None and code[0] == 1009
    assert healthy
