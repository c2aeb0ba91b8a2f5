"""
End to end, real native VNC viewers through the proxy to a real QEMU guest (libvirtd), each
given only what a user gives it: the host, the port and the one-time password of the token
response (or its vnc_url).

- gvnccapture (Debian's gvncviewer, GTK-VNC: the library of remote-viewer, virt-manager and
  GNOME Boxes) on the xvpvnc port, started at several phases of the wall-clock second: GTK-VNC
  sends "RFB " itself when no greeting came within its 1.75-2.75 s timer (whole seconds,
  coalesced), so the phases put that before and after the proxy's own 2 s wait; every one must
  work. And on the native listener, which greets at once.
- TigerVNC (xtigervncviewer, under Xvfb) with a password file made by vncpasswd -f, as its
  manual says, on the native listener.
- remote-viewer (virt-viewer) with the vnc:// URL of the token response, under Xvfb.

Each must show the guest's screen: the captured or displayed frame is compared with QEMU's own
screendump (virsh screenshot): the same text cells lit, wherever the viewer put the frame.
"""

import os
import pty
import select
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.e2e.service import ServiceProcess
from tests.support import api
from tests.support.xvfb import Xvfb

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def service(vnc_guest, tmp_path_factory):
    proc = ServiceProcess(tmp_path_factory.mktemp("consoleproxy-native"))  # native_wait: 2 s
    proc.start()
    yield proc
    proc.stop()


def grant(service, instance):
    status, body = api.grant(service.api_url, service.key, instance)
    assert status == 200, body
    return body


def reference(guest, tmp_path):
    from PIL import Image

    path = tmp_path / "qemu.png"
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", "screenshot", guest.name, str(path)],
                   check=True, capture_output=True, timeout=60)
    with Image.open(path) as image:
        return image.convert("RGB")


def lit(image):
    """The lit pixels (the text) of an image, as a set of (x, y)."""
    width, _ = image.size
    data = image.convert("L").tobytes()
    return {(i % width, i // width) for i, v in enumerate(data) if v > 96}


def assert_shows_the_guest(image, guest, tmp_path, name):
    """
    The guest's screen is drawn, wherever the viewer put its frame (and whatever window
    chrome surrounds it): at the best offset, 90% of the text pixels of QEMU's own screendump
    are lit in the viewer's image too (the rest: a blinking cursor).
    """
    ARTIFACTS.mkdir(exist_ok=True)
    image.save(ARTIFACTS / f"{name}.png")
    expected = sorted(lit(reference(guest, tmp_path)), key=lambda p: (p[1], p[0]))
    assert len(expected) > 1000, "the guest's screen shows no text yet"
    seen = lit(image)
    x0, y0 = expected[0]
    sample = expected[::max(1, len(expected) // 400)]
    best, offset = -1, (0, 0)
    for sx, sy in sorted(seen, key=lambda p: (p[1], p[0]))[:20000]:
        dx, dy = sx - x0, sy - y0
        score = sum((x + dx, y + dy) in seen for x, y in sample)
        if score > best:
            best, offset = score, (dx, dy)
            if score == len(sample):
                break
    dx, dy = offset
    common = sum((x + dx, y + dy) in seen for x, y in expected)
    assert common >= 0.9 * len(expected), (name, offset, common, len(expected))


def run_on_a_tty(argv, password, timeout=60):
    """
    Run C{argv} on a pseudo-terminal (gvnccapture reads the password from its terminal only),
    type C{password} at its prompt. @return: (exit status, what it printed).
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    out, typed, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed its terminal
                    break
                if not chunk:
                    break
                out += chunk
            if not typed and b"assword" in out and not termios.tcgetattr(fd)[3] & termios.ECHO:
                # typed once the prompt turned echo off: typed earlier, the terminal's
                # change of mode (TCSAFLUSH) would discard it, as it would a user's keys
                os.write(fd, password.encode() + b"\n")
                typed = True
        else:
            os.kill(pid, 9)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def gvnccapture(port, password, shot):
    # GTK-VNC names a port as a display: HOST:DISPLAY is port 5900 + DISPLAY
    assert port > 5900
    return run_on_a_tty(["gvnccapture", f"127.0.0.1:{port - 5900}", str(shot)], password)


def wait_for_phase(phase):
    """Sleep until the wall clock is C{phase} (0-1) into a second."""
    time.sleep((phase - time.time() % 1) % 1)


def capture(port, password, tmp_path, name):
    from PIL import Image

    shot = tmp_path / f"{name}.png"
    code, out = gvnccapture(port, password, shot)
    assert code == 0 and shot.exists(), out
    with Image.open(shot) as image:
        return image.convert("RGB")


PHASES = (0.0, 0.17, 0.33, 0.5, 0.67, 0.83)


def test_gtk_vnc_on_the_xvpvnc_port_at_every_phase(service, vnc_guest, tmp_path):
    """gvnccapture started at six phases of the second: GTK-VNC's own "RFB " comes before the
    proxy's 2 s wait in some and after it in others; every capture shows the guest, and both
    ways of recognising a native viewer were taken."""
    before = service.log()
    for phase in PHASES:
        body = grant(service, vnc_guest.name)
        wait_for_phase(phase)
        image = capture(service.xvpvnc_port, body["password"], tmp_path, f"phase{phase}")
        assert_shows_the_guest(image, vnc_guest, tmp_path, f"gvnccapture-xvpvnc-{phase}")
    log = service.log()[len(before):]
    assert log.count("native vnc login") == len(PHASES)
    assert "sent RFB first" in log and "silent for native_wait" in log, log


def test_gtk_vnc_on_the_native_listener(service, vnc_guest, tmp_path):
    """On the native listener (which greets at once) with the host and port of vnc_url."""
    body = grant(service, vnc_guest.name)
    assert body["vnc_url"] == f"vnc://:{body['password']}@127.0.0.1:{service.vnc_port}"
    image = capture(service.vnc_port, body["password"], tmp_path, "native")
    assert_shows_the_guest(image, vnc_guest, tmp_path, "gvnccapture-native")


def test_tigervnc_with_a_password_file(service, vnc_guest, tmp_path):
    """xtigervncviewer (TigerVNC, under Xvfb) with -passwd FILE, the file made by vncpasswd -f
    as its manual says, on the host and port of vnc_url."""
    from urllib.parse import urlsplit

    body = grant(service, vnc_guest.name)
    url = urlsplit(body["vnc_url"])
    passwd = tmp_path / "passwd"
    passwd.write_bytes(subprocess.run(["vncpasswd", "-f"], input=body["password"].encode(),
                                      capture_output=True, check=True).stdout)
    with Xvfb() as x:
        viewer = subprocess.Popen(["xtigervncviewer", "-passwd", str(passwd),
                                   f"{url.hostname}::{url.port}"],
                                  env=x.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            shown = wait_for_the_guest(x, vnc_guest, tmp_path, "tigervnc")
        finally:
            viewer.terminate()
            out = viewer.communicate(timeout=10)[0].decode("utf-8", "replace")
    assert shown, out


def test_remote_viewer_with_the_vnc_url(service, vnc_guest, tmp_path):
    """remote-viewer (virt-viewer) opens the token response's vnc_url. It does not take the
    password from the URL: it asks, in a dialog with the password field focused, and the
    user types it (xdotool types it here)."""
    body = grant(service, vnc_guest.name)
    with Xvfb() as x:
        viewer = subprocess.Popen(["remote-viewer", body["vnc_url"]], env=x.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            typed = type_into_the_password_dialog(x, body["password"])
            shown = typed and wait_for_the_guest(x, vnc_guest, tmp_path, "remote-viewer")
        finally:
            viewer.terminate()
            out = viewer.communicate(timeout=10)[0].decode("utf-8", "replace")
    assert typed, out
    assert shown, out


def type_into_the_password_dialog(x, password, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(["xdotool", "search", "--name", "vnc://"], env=x.env,
                               capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            time.sleep(1.0)  # the dialog is drawn once the proxy asked for the password
            subprocess.run(["xdotool", "type", "--delay", "50", password], env=x.env, check=True)
            subprocess.run(["xdotool", "key", "Return"], env=x.env, check=True)
            return True
        time.sleep(0.3)
    return False


def wait_for_the_guest(x, guest, tmp_path, name, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(1.0)
        try:
            assert_shows_the_guest(x.screen(), guest, tmp_path, name)
            return True
        except AssertionError:
            if time.monotonic() > deadline:
                raise
