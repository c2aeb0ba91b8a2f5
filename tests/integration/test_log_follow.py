"""
Following the serial console log over real sockets: the tail, then output printed later, in
one chunked response that ends when the instance stops; a client that does not read is cut.
"""

import http.client
import socket
import time
from urllib.parse import urlsplit

import pytest_twisted
from twisted.internet import reactor, threads

from tests.support import api
from vncproxy.hypervisor import DomainState

in_thread = threads.deferToThread


def on_reactor(f, *args):
    return threads.blockingCallFromThread(reactor, f, *args)


def open_follow(proxy, query="follow=true"):
    parts = urlsplit(proxy.api_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    conn.request("GET", f"/v1/instances/ser1/console_log?{query}",
                 headers={"X-Auth-Token": proxy.key})
    return conn, conn.getresponse()


def read_until(response, needle, timeout=10):
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        assert time.monotonic() < deadline, f"{needle!r} not received: {got[-200:]!r}"
        got += response.read1(65536)
    return got


@pytest_twisted.inlineCallbacks
def test_follow_sends_the_tail_then_new_output_until_the_instance_stops(proxy, serial_guest):
    """?follow=true&tail=N: the last N bytes at once, then each line as the guest prints it;
    the response ends (complete) when the instance powers off."""
    def scenario():
        serial_guest.shell.prints(b"early line\r\nrecent line\r\n")
        time.sleep(0.3)
        conn, response = open_follow(proxy, "follow=true&tail=13")
        first = read_until(response, b"recent line\r\n")
        serial_guest.shell.prints(b"printed later\r\n")
        later = read_until(response, b"printed later\r\n")
        on_reactor(proxy.hypervisor.set_state, "ser1", DomainState.SHUTOFF)
        rest = response.read()  # ends: the chunked body's last chunk came
        conn.close()
        return response, first, later, rest
    response, first, later, rest = yield in_thread(scenario)
    assert response.status == 200
    assert response.getheader("content-type") == "application/octet-stream"
    assert response.getheader("transfer-encoding") == "chunked"
    assert first == b"recent line\r\n"  # the tail: nothing older, nothing twice
    assert later == b"printed later\r\n"
    assert b"printed later" not in rest


@pytest_twisted.inlineCallbacks
def test_follow_of_a_stopped_instance_is_its_log(proxy, serial_guest):
    """An instance that is not running has nothing to follow: the answer is its log."""
    def scenario():
        serial_guest.shell.prints(b"before the stop\r\n")
        time.sleep(0.3)
        on_reactor(proxy.hypervisor.set_state, "ser1", DomainState.SHUTOFF)
        return api.call(f"{proxy.api_url}/v1/instances/ser1/console_log?follow=true",
                        key=proxy.key)
    status, body = yield in_thread(scenario)
    assert status == 200 and body.endswith(b"before the stop\r\n")


@pytest_twisted.inlineCallbacks
def test_bad_follow_values_are_refused(proxy, serial_guest):
    status, body = yield in_thread(
        api.call, f"{proxy.api_url}/v1/instances/ser1/console_log?follow=yes", key=proxy.key)
    assert status == 400 and body["errors"][0]["message"] == "follow must be true or false"


@pytest_twisted.inlineCallbacks
def test_a_follower_that_does_not_read_is_cut(make_proxy, add_serial_guest):
    """A follower whose client stops reading falls behind by more than [serial] viewer_queue
    and is cut: its response never completes."""
    proxy = make_proxy(serial_viewer_queue=4096, serial_slow_viewer_grace=0.5)
    guest = add_serial_guest(proxy)
    line = b"x" * 1022 + b"\r\n"

    def scenario():
        parts = urlsplit(proxy.api_url)
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((parts.hostname, parts.port))
        stuck.sendall(f"GET /v1/instances/ser1/console_log?follow=true HTTP/1.1\r\n"
                      f"Host: x\r\nX-Auth-Token: {proxy.key}\r\n\r\n".encode())
        time.sleep(0.3)
        hub = proxy.service.ctx.serial.hub(guest.uuid)
        deadline = time.monotonic() + 30
        printed = 0
        while len(hub.viewers) == 1 and time.monotonic() < deadline:
            guest.shell.prints(line * 64)
            printed += 1
        cut = len(hub.viewers) == 0
        stuck.settimeout(10)
        received = b""
        try:
            while chunk := stuck.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        stuck.close()
        return cut, printed, received
    cut, printed, received = yield in_thread(scenario)
    assert cut, f"the follower was not cut after {printed * 64} KiB"
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert not received.endswith(b"0\r\n\r\n")  # no last chunk: the client can tell
