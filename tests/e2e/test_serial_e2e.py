"""
End to end: the real service (twistd subprocess, reading consoles through libvirt's
virDomainOpenConsole as a non-root service would) in front of a real busybox guest under a real
libvirtd. The guest is started only after the service runs, so that its whole boot must be
captured with nobody attached; libvirt's own <log> file of the serial port (virtlogd, which
sees everything QEMU's serial backend emits) is the reference the captured log is compared to.

The tests run in order on one guest: boot -> type -> takeover -> read-only -> reboot ->
destroy -> restart of the service (with source = pty) -> start again.
"""

import time

import pytest

from tests.e2e.service import ServiceProcess
from tests.support import api
from tests.support.serialclient import SerialClient
from tests.support.viewer import open_websocket
from vncproxy.closecodes import CloseCode

READY = b"CONSOLEPROXY-TESTBED-READY"
ISSUED = []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("consoleproxy-serial")


@pytest.fixture(scope="module")
def service(workdir, serial_guest):
    proc = ServiceProcess(workdir, serial__scrollback=8192,
                          serial__domains=serial_guest.name).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def booted(service, serial_guest):
    """The guest, started once the service runs (so nobody is attached during its boot)."""
    assert not serial_guest.is_running()
    serial_guest.start(wait=True)
    return serial_guest


def grant(service, guest, **body):
    status, response = api.grant(service.api_url, service.key, guest.name, "serial", **body)
    assert status == 200, response
    ISSUED.append(response["access_token"])
    return response


def attach(service, guest, **body):
    return SerialClient(grant(service, guest, **body)["href"])


def console_log(service, guest, tail=None):
    query = f"?tail={tail}" if tail is not None else ""
    status, body = api.call(f"{service.api_url}/v1/instances/{guest.uuid}/console_log{query}",
                            key=service.key)
    assert status == 200, body
    return body


def wait_for_log(service, guest, needle, timeout=30, since=0):
    deadline = time.monotonic() + timeout
    while True:
        log = console_log(service, guest)
        if needle in log[since:]:
            return log
        assert time.monotonic() < deadline, f"{needle!r} not captured: {log[-300:]!r}"
        time.sleep(0.2)


def ws_status(url):
    import websocket

    try:
        open_websocket(url).close()
    except websocket.WebSocketBadStatusException as e:
        return e.status_code
    return 101


def test_boot_is_captured_with_nobody_attached(service, booted):
    """Every byte of the boot (kernel messages to the shell prompt) is in the service's log
    though no viewer was attached: identical to libvirt's own log of the serial port."""
    reference = booted.wait_for_serial(booted.prompt)
    captured = wait_for_log(service, booted, booted.prompt)
    assert captured.startswith(b"[    0.000000] Linux version")
    assert READY in captured
    # Same bytes as virtlogd saw (it may be a little ahead or behind at the very end).
    common = min(len(reference), len(captured))
    assert captured[:common] == reference[:common]
    assert common > 10_000
    status, lxd = api.call(f"{service.api_url}/1.0/instances/{booted.name}/console",
                           key=service.key)
    assert status == 200 and lxd.startswith(captured[:common])
    assert console_log(service, booted, tail=100) == console_log(service, booted)[-100:]


def test_viewer_sees_the_prompt_first_then_types_echo(service, booted):
    """A viewer gets recent output (ending with the prompt) on attach, types echo and reads the
    answer from the guest's shell."""
    client = attach(service, booted)
    client.read_until(booted.prompt)
    mark = len(client.received)
    client.type(b"echo hello-from-e2e\r")
    out = client.read_until(b"hello-from-e2e\r\n" + booted.prompt, since=mark)
    assert b"echo hello-from-e2e\r\n" in out[mark:]  # the guest echoes the line
    client.type_text("echo text-frame-$((6*7))\r")  # websocat's default: text frames
    client.read_until(b"text-frame-42\r\n", since=mark)
    client.disconnect()


def test_second_session_refused_then_force_takes_over(service, booted):
    """A second interactive session is refused (409) while one is attached; one with force
    disconnects it with 4004 and owns the console from then on."""
    spare = grant(service, booted)
    first = attach(service, booted)
    first.read_until(booted.prompt)
    status, body = api.grant(service.api_url, service.key, booted.name, "serial")
    assert status == 409
    assert ws_status(spare["href"]) == 409
    second = attach(service, booted, force=True)
    assert first.wait_closed() == (CloseCode.TAKEN_OVER,
                                   "taken over: another session took the console over")
    mark = len(second.received)
    second.type(b"echo forced-$((1+1))\r")
    second.read_until(b"forced-2\r\n", since=mark)
    second.disconnect()


def test_read_only_viewer_sees_output_and_cannot_type(service, booted):
    """A read-only viewer sees what the writer's commands print; its own input never reaches
    the guest (nor do its terminal's answers to the shell's cursor-position requests)."""
    writer = attach(service, booted)
    viewer = attach(service, booted, read_only=True)
    writer.read_until(booted.prompt)
    viewer.read_until(booted.prompt)
    mark = len(viewer.received)
    viewer.type(b"echo typed-by-viewer-$((2*3))\r")
    viewer.type(b"\x1b[24;80R")
    writer.type(b"echo typed-by-writer-$((3*3))\r")
    viewer.read_until(b"typed-by-writer-9\r\n", since=mark)
    time.sleep(1.0)
    log = console_log(service, booted)
    assert b"typed-by-viewer" not in log and b"typed-by-viewer-6" not in bytes(viewer.received)
    writer.disconnect()
    viewer.disconnect()


def test_reboot_keeps_the_session_attached(service, booted):
    """A guest reboot (same QEMU process, same PTY) leaves the session open: it sees the new
    boot through the same WebSocket and can type into it."""
    client = attach(service, booted)
    client.read_until(booted.prompt)
    mark = len(client.received)
    client.type(b"reboot -f\r")  # no init shutdown sequence: half the time
    client.read_until(READY, timeout=60, since=mark)
    client.read_until(booted.prompt, timeout=30, since=len(client.received) - len(READY))
    mark = len(client.received)
    client.type(b"echo still-here\r")
    client.read_until(b"still-here\r\n", since=mark)
    assert client.close is None
    client.disconnect()


def test_destroy_closes_every_session_and_keeps_the_log(service, booted):
    """virsh destroy closes the writer and the viewers with 4007; the log stays."""
    writer = attach(service, booted)
    viewer = attach(service, booted, read_only=True)
    writer.read_until(booted.prompt)
    booted.destroy()
    assert writer.wait_closed(timeout=15) == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    assert viewer.wait_closed(timeout=15) == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    log = console_log(service, booted)
    assert b"hello-from-e2e" in log and b"still-here" in log
    status, body = api.grant(service.api_url, service.key, booted.name, "serial")
    assert status == 409


def test_log_survives_a_restart_of_the_service(service, booted, workdir, serial_guest):
    """After the service restarts (here reading the PTY directly, source = pty), the log still
    holds the earlier output; a new start of the guest is captured into the same log."""
    before = console_log(service, booted)
    service.stop()
    # Same work and state directory (so the same log files); new ports and API key.
    restarted = ServiceProcess(workdir, serial__scrollback=8192, serial__source="pty",
                               serial__domains=serial_guest.uuid).start()
    try:
        assert console_log(restarted, booted) == before
        booted.start(wait=True)
        log = wait_for_log(restarted, booted, booted.prompt, since=len(before))
        assert log.startswith(before)
        new_boot = log[len(before):]
        assert new_boot.startswith(b"[    0.000000] Linux version")
        client = attach(restarted, booted)
        client.read_until(booted.prompt)
        mark = len(client.received)
        client.type(b"echo direct-pty\r")
        client.read_until(b"direct-pty\r\n", since=mark)
        client.disconnect()
    finally:
        restarted.stop()
        booted.destroy()
    logs = restarted.log()  # the same file: both runs of the service
    assert "capturing the serial console" in logs
    assert ISSUED and not any(token in logs for token in ISSUED)
    assert service.key not in logs and restarted.key not in logs
