"""Session fixtures for the end-to-end tests against a real libvirt + QEMU host.

Set-up: ``tools/testbed.sh up`` (as root) once; the ``testbed`` fixture then runs
``tools/testbed.sh images daemons`` itself (a no-op when everything is in place).

Fixtures:
    testbed    -> testbed.Testbed (skips unless root with libvirtd and QEMU; with
                  CONSOLEPROXY_REQUIRE_E2E=1, as in CI, it fails instead of skipping)
    vnc_guest  -> testbed.Guest, one booted guest with VNC password "secret1"
    serial_guest -> testbed.Guest, defined but NOT started (a serial test starts it once its
                  service runs, so that the whole boot is captured); undefined at the end
    browser    -> a Playwright Browser: headless Debian Chromium (skips like testbed without it)

Knobs (mainly to check the skip/fail logic): CONSOLEPROXY_E2E_LIBVIRTD (libvirtd binary,
default /usr/sbin/libvirtd), CONSOLEPROXY_E2E_LIBVIRT_SOCK (socket of a running daemon,
default /run/libvirt/libvirt-sock or virtqemud-sock), CONSOLEPROXY_E2E_QEMU (QEMU binary,
default qemu-system-x86_64 on PATH or /usr/bin/qemu-system-x86_64).
"""

import os
import re
import shutil
import socket
import sys

import pytest

# Importable as plain `testbed` whatever pytest's import mode is.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import testbed as _testbed  # noqa: E402

E2E_PREFIX = "cp-e2e-"


def _daemon_socket_answers() -> bool:
    override = os.environ.get("CONSOLEPROXY_E2E_LIBVIRT_SOCK")
    paths = [override] if override is not None else [
        "/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock"]
    for path in paths:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(path)
            return True
        except OSError:
            pass
        finally:
            s.close()
    return False


def e2e_unavailable_reason() -> str | None:
    """Why the real-hypervisor tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "e2e tests need root (libvirt qemu:///system, guest PTYs); run as root after tools/testbed.sh up"
    libvirtd = os.environ.get("CONSOLEPROXY_E2E_LIBVIRTD", "/usr/sbin/libvirtd")
    if not os.access(libvirtd, os.X_OK) and not _daemon_socket_answers():
        return f"no libvirtd ({libvirtd} missing and no running daemon); run tools/testbed.sh up"
    qemu = os.environ.get("CONSOLEPROXY_E2E_QEMU") or shutil.which("qemu-system-x86_64") \
        or "/usr/bin/qemu-system-x86_64"
    if not os.access(qemu, os.X_OK):
        return f"no QEMU ({qemu} missing); run tools/testbed.sh up"
    return None


def _require_e2e() -> bool:
    return os.environ.get("CONSOLEPROXY_REQUIRE_E2E", "").lower() in ("1", "true", "yes")


def _is_leftover(name: str) -> bool:
    """A cp-e2e-* guest not owned by a live test process (its name ends in the owner's pid)."""
    m = re.search(r"-(\d+)$", name)
    if not m:
        return True
    pid = int(m.group(1))
    if pid == os.getpid():
        return True  # called at session start: nothing of ours exists yet, so an earlier run's
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return True
    return b"py" not in cmdline  # a live pytest (e.g. an xdist worker) keeps its guests


@pytest.fixture(scope="session")
def testbed():
    reason = e2e_unavailable_reason()
    if reason:
        if _require_e2e():
            pytest.fail(f"CONSOLEPROXY_REQUIRE_E2E is set but {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        tb = _testbed.ensure_testbed()
    except Exception as e:  # noqa: BLE001 - report the script's output as the failure
        pytest.fail(f"testbed set-up failed: {e}", pytrace=False)
    # Guard: guests of earlier, crashed or interrupted runs (only our tagged ones).
    for name in tb.guest_names(prefix=E2E_PREFIX):
        if _is_leftover(name):
            tb.remove_guest(name)
    return tb


@pytest.fixture(scope="session")
def vnc_guest(testbed):
    name = f"{E2E_PREFIX}vnc-{os.getpid()}"
    guest = testbed.make_guest(name, vnc_password="secret1")
    yield guest
    guest.undefine()


@pytest.fixture(scope="session")
def serial_guest(testbed):
    name = f"{E2E_PREFIX}serial-{os.getpid()}"
    guest = testbed.make_guest(name, vnc_password=None, start=False)
    yield guest
    guest.undefine()


@pytest.fixture(scope="session")
def browser(testbed):
    """Headless Chromium (Debian's package) under Playwright; see tests/support/browser.py."""
    from tests.support import browser as _browser

    reason = _browser.unavailable_reason()
    if reason:
        if _require_e2e():
            pytest.fail(f"CONSOLEPROXY_REQUIRE_E2E is set but {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = _browser.launch(playwright)
        yield chromium
        chromium.close()
