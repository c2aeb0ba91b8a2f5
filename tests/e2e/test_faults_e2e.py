"""
End to end, faults: libvirtd restarted under running sessions, a guest's QEMU killed with
SIGKILL, and the service itself stopped with SIGTERM and started again, each against the real
service (twistd), real QEMU guests and a real libvirtd.

The libvirtd that is restarted is a private one (tests/e2e/privatelibvirtd.py: its own mount
namespace, sockets and state), so that the shared daemon and other people's guests are never
disturbed; every guest of this module runs under it. The tests run in order on two guests:
A (captured through libvirt's console stream, the default) and B (captured by a second service
reading the PTY directly). Each guest runs a ticker printing "tick-N" five times a second, so
that what the serial log lost, and where, can be counted. Figures are printed ("FAULTS ...";
run with -s to see them).
"""

import os
import re
import signal
import time

import pytest
import websocket

from tests.e2e import privatelibvirtd
from tests.e2e.service import ServiceProcess
from tests.e2e.testbed import Testbed
from tests.support import api
from tests.support.serialclient import SerialClient
from tests.support.viewer import RfbViewer, WebSocketPipe, close_status
from vncproxy.closecodes import CloseCode
from vncproxy.web.errors import error_message

PARENT = "/var/tmp/consoleproxy-testbed/private-libvirtd"
TICKER = b"i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done &\r"
TICK = re.compile(rb"tick-(\d+)\r\n")
STOPPED_MARK = b"[consoleproxy: serial capture stopped at "
RESUMED_MARK = b"[consoleproxy: serial capture resumed at "
BAD_LOG_WORDS = ("Traceback", "Unhandled")


def figure(name, value, unit=""):
    print(f"FAULTS {name} = {value:.2f}{unit}" if isinstance(value, float)
          else f"FAULTS {name} = {value}{unit}")


@pytest.fixture(scope="module")
def daemon(testbed):
    reason = privatelibvirtd.unavailable_reason()
    if reason:
        if os.environ.get("CONSOLEPROXY_REQUIRE_E2E", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CONSOLEPROXY_REQUIRE_E2E is set but {reason}", pytrace=False)
        pytest.skip(reason)
    privatelibvirtd.remove_leftovers(PARENT)
    d = privatelibvirtd.PrivateLibvirtd(f"{PARENT}/{os.getpid()}").start()
    yield d
    d.close()


@pytest.fixture(scope="module")
def guests(daemon, testbed):
    tb = Testbed(daemon.uri, testbed.directory)
    a = tb.make_guest(f"cp-e2e-fault-a-{os.getpid()}", vnc_password="secret1", start=False)
    b = tb.make_guest(f"cp-e2e-fault-b-{os.getpid()}", vnc_password="secret1", start=False)
    return a, b


@pytest.fixture(scope="module")
def services(daemon, guests, tmp_path_factory):
    """svc_lv captures A through libvirt; svc_pty captures B from its PTY. Started before the
    guests boot, so that each whole boot is captured."""
    a, b = guests
    work = tmp_path_factory.mktemp("faults")
    svc_lv = ServiceProcess(work / "lv", libvirt__uri=daemon.uri, serial__domains=a.name,
                            serial__scrollback=4096).start()
    svc_pty = ServiceProcess(work / "pty", libvirt__uri=daemon.uri, serial__domains=b.name,
                             serial__source="pty", serial__scrollback=4096).start()
    a.start(wait=False)
    b.start(wait=False)
    a.wait_for_serial(a.prompt, 120)
    b.wait_for_serial(b.prompt, 120)
    yield svc_lv, svc_pty
    svc_lv.stop()
    svc_pty.stop()


def console_log(service, guest):
    status, body = api.call(f"{service.api_url}/v1/instances/{guest.uuid}/console_log",
                            key=service.key)
    assert status == 200, body
    return body


def wait_for_log(service, guest, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        log = console_log(service, guest)
        if predicate(log):
            return log
        assert time.monotonic() < deadline, f"not in the log: {log[-400:]!r}"
        time.sleep(0.1)


def serial(service, guest, **body):
    status, grant = api.grant(service.api_url, service.key, guest.name, "serial", **body)
    assert status == 200, grant
    return SerialClient(grant["href"])


def vnc(service, guest):
    status, grant = api.grant(service.api_url, service.key, guest.name)
    assert status == 200, grant
    ws = websocket.create_connection(grant["href"], timeout=20, suppress_origin=True)
    viewer = RfbViewer(WebSocketPipe(ws))
    viewer.handshake((3, 8))
    return ws, viewer


def start_ticker(client, guest):
    client.read_until(guest.prompt, timeout=20)
    mark = len(client.received)
    client.type(TICKER)
    client.read_until(b"tick-3\r\n", timeout=20, since=mark)


def ticks(data):
    return [int(n) for n in TICK.findall(data)]


def assert_consecutive(numbers):
    assert numbers, "no ticks"
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers


def wait_closed_ws(ws, timeout):
    ws.settimeout(timeout)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return close_status(data)


def assert_clean(*services):
    for svc in services:
        log = svc.log()
        for word in BAD_LOG_WORDS:
            assert word not in log, f"{word} in {svc.log_path}:\n{log[-3000:]}"


def test_libvirtd_restart_keeps_sessions_and_resumes_capture(daemon, guests, services):
    """libvirtd stopped and started under a VNC viewer and serial viewers: the API answers 503
    while it is down, the VNC session keeps getting screen updates, the serial session stays
    and types again, capture resumes with the gap marked (PTY capture has no gap at all), new
    tokens work, and lifecycle events resume (destroy closes with 4007, a new start is
    captured)."""
    a, b = guests
    svc_lv, svc_pty = services
    ws, viewer = vnc(svc_lv, a)
    assert viewer.framebuffer_update()
    writer_a = serial(svc_lv, a)
    start_ticker(writer_a, a)
    writer_b = serial(svc_pty, b)
    start_ticker(writer_b, b)

    t_down = time.monotonic()
    daemon.stop()
    figure("libvirtd_stop_s", time.monotonic() - t_down, " s")
    try:
        t0 = time.monotonic()
        status, body = api.grant(svc_lv.api_url, svc_lv.key, a.name)
        figure("grant_while_down_s", time.monotonic() - t0, " s")
        assert status == 503 and body["errors"][0]["code"] == "service_unavailable"
        assert error_message(body) == (503, "hypervisor unavailable")
        assert time.monotonic() - t0 < 5
        status, health = api.call(f"{svc_lv.api_url}/healthz")
        assert status == 503, health
        time.sleep(1.5)  # a gap the ticker fills with output nobody captures (source libvirt)
    finally:
        t_up = time.monotonic()
        daemon.start()
    figure("libvirtd_start_s", time.monotonic() - t_up, " s")
    figure("libvirtd_down_s", time.monotonic() - t_down, " s")

    wait_for_log(svc_lv, a, lambda log: RESUMED_MARK in log
                 and ticks(log[log.rfind(RESUMED_MARK):]), timeout=40)
    figure("capture_resumed_after_start_s", time.monotonic() - t_up, " s")
    back = re.search(r"back after ([0-9.]+) s; lifecycle events resume", svc_lv.log())
    assert back, svc_lv.log()[-2000:]
    figure("adapter_outage_s", float(back.group(1)), " s")

    # The serial session stayed, sees the marked gap, and types into the reopened console.
    writer_a.read_until(RESUMED_MARK, timeout=20)
    assert writer_a.close is None
    mark = len(writer_a.received)
    writer_a.type(b"echo typed-after-$((40+2))\r")
    writer_a.read_until(b"typed-after-42\r\n", timeout=20, since=mark)
    # The VNC session (QEMU's socket, not libvirtd's) never noticed.
    assert viewer.framebuffer_update()
    # New tokens, VNC and serial.
    ws2, viewer2 = vnc(svc_lv, a)
    assert viewer2.framebuffer_update()
    reader_a = serial(svc_lv, a, read_only=True)
    reader_a.read_until(RESUMED_MARK, timeout=20)

    # The log: ticks consecutive up to the stopped line, consecutive after the resumed line,
    # the missing ones exactly between the two.
    log_a = console_log(svc_lv, a)
    assert log_a.count(STOPPED_MARK) == 1 and log_a.count(RESUMED_MARK) == 1
    before = log_a[:log_a.index(STOPPED_MARK)]
    after = log_a[log_a.index(RESUMED_MARK):]
    assert_consecutive(ticks(before))
    assert_consecutive(ticks(after))
    figure("ticks_lost_in_marked_gap", ticks(after)[0] - ticks(before)[-1] - 1)
    # Everything the guest printed, as QEMU logged it, apart from the gap: what precedes the
    # marker is byte for byte the start of QEMU's own log of the port.
    reference = a.serial_output()
    assert before.startswith(b"[    0.000000] Linux version")
    assert reference[:len(before) - 2] == before[:-2]

    # Direct PTY capture (svc_pty, guest B) never had a gap.
    writer_b.read_until(f"tick-{ticks(after)[-1]}".encode(), timeout=20)
    log_b = console_log(svc_pty, b)
    assert STOPPED_MARK not in log_b and RESUMED_MARK not in log_b
    assert_consecutive(ticks(log_b))
    assert writer_b.close is None
    writer_b.disconnect()

    # Lifecycle events resumed: destroy closes every session with 4007 through the STOPPED
    # event, and a new start is captured from its STARTED event.
    t0 = time.monotonic()
    a.destroy()
    assert writer_a.wait_closed(timeout=15) == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    assert reader_a.wait_closed(timeout=15) == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    assert wait_closed_ws(ws, 15) == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    assert wait_closed_ws(ws2, 15) == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    figure("destroy_to_all_closed_s", time.monotonic() - t0, " s")
    assert f"instance {a.uuid} stopped: closing" in svc_lv.log()
    size = len(console_log(svc_lv, a))
    a.start(wait=False)
    wait_for_log(svc_lv, a, lambda log: a.prompt in log[size:], timeout=60)
    assert console_log(svc_lv, a)[size:].startswith(b"[    0.000000] Linux version")
    assert_clean(svc_lv, svc_pty)


def test_qemu_killed_closes_sessions_with_instance_stopped(guests, services):
    """kill -9 of a guest's QEMU closes its VNC and serial sessions with 4007 within seconds,
    writes no gap marker (a stopped domain is no gap), leaves no traceback, and the service
    keeps serving the other guest."""
    a, b = guests
    svc_lv, _ = services
    if not a.is_running():
        a.start(wait=True)
    ws, viewer = vnc(svc_lv, a)
    assert viewer.framebuffer_update()
    client = serial(svc_lv, a)
    client.read_until(a.prompt, timeout=20)
    pid = privatelibvirtd.qemu_pid(a.name)
    assert pid
    size = len(console_log(svc_lv, a))

    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    assert client.wait_closed(timeout=15) == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    figure("kill_to_serial_closed_s", time.monotonic() - t0, " s")
    assert wait_closed_ws(ws, 15) == (CloseCode.INSTANCE_STOPPED, "instance stopped")
    figure("kill_to_vnc_closed_s", time.monotonic() - t0, " s")
    assert not a.is_running()
    assert STOPPED_MARK not in console_log(svc_lv, a)[size:]

    ws_b, viewer_b = vnc(svc_lv, b)
    assert viewer_b.framebuffer_update()
    ws_b.close()
    assert_clean(svc_lv)


def test_sigterm_flushes_and_restart_marks_the_gap(daemon, guests, services):
    """SIGTERM closes the sessions with 4008 and leaves a log holding every byte printed up to
    the stop, then a stopped line; a new service on the same state directory resumes capture
    of the still running guest after a resumed line, and the ticks after it follow on."""
    a, _ = guests
    svc_lv, _ = services
    if a.is_running():
        a.destroy()
    size = len(console_log(svc_lv, a))
    a.start(wait=False)  # the service captures this whole boot
    wait_for_log(svc_lv, a, lambda log: a.prompt in log[size:], timeout=60)
    ws, _ = vnc(svc_lv, a)
    client = serial(svc_lv, a)
    start_ticker(client, a)

    svc_lv.process.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert client.wait_closed(timeout=15) == (CloseCode.SERVICE_STOPPING, "service stopping")
    assert wait_closed_ws(ws, 15) == (CloseCode.SERVICE_STOPPING, "service stopping")
    assert svc_lv.process.wait(timeout=20) in (0, -signal.SIGTERM)
    figure("sigterm_to_exit_s", time.monotonic() - t0, " s")
    reference = a.serial_output()  # QEMU's own log of this boot, read right after the exit

    log_path = svc_lv.workdir / "state" / "serial" / f"{a.uuid}.log"
    stopped_log = log_path.read_bytes()
    this_boot = stopped_log[size:]
    assert this_boot.count(STOPPED_MARK) == 1
    captured = this_boot[:this_boot.index(STOPPED_MARK)]
    # CR LF framing the marker: the captured bytes are the reference's first bytes exactly.
    assert captured.endswith(b"\r\n")
    assert reference[:len(captured) - 2] == captured[:-2]
    unsaved = reference[len(captured) - 2:]
    figure("printed_after_capture_stopped_bytes", len(unsaved))
    assert len(ticks(unsaved)) <= 15  # the ~2.5 s between the stop's start and the exit, at most
    assert this_boot.rstrip().endswith(b"(service stopping)]")

    down = time.monotonic()
    time.sleep(1.0)
    restarted = ServiceProcess(svc_lv.workdir, libvirt__uri=daemon.uri,
                               serial__domains=a.name, serial__scrollback=4096).start()
    try:
        log = wait_for_log(restarted, a, lambda log: RESUMED_MARK in log[len(stopped_log):]
                           and ticks(log[log.rfind(RESUMED_MARK):]), timeout=30)
        figure("service_down_s", time.monotonic() - down, " s")
        tail = log[len(stopped_log):]
        assert tail.startswith(b"\r\n" + RESUMED_MARK)
        resumed_ticks = ticks(tail)
        assert_consecutive(resumed_ticks)
        assert resumed_ticks[0] > ticks(captured)[-1]
        figure("ticks_lost_across_service_restart", resumed_ticks[0] - ticks(captured)[-1] - 1)
        assert_consecutive(ticks(captured))
    finally:
        restarted.stop()
        svc_lv.process = restarted.process  # the module fixture stops it (again: harmless)
    assert_clean(restarted)

