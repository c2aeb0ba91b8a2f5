"""
Tests of the installed Debian package: tools/package-test builds the .deb, installs it with apt,
runs these with CONSOLEPROXY_PACKAGE_TEST=1, then purges it. Without that variable nothing here
is collected (a plain pytest run never touches /etc or the system's packages).

The service is started the way its systemd unit starts it (this machine has no systemd as PID
1): the unit's ExecStart, User, Group (with the user's supplementary groups, as systemd's
initgroups), WorkingDirectory, UMask, NoNewPrivileges and empty CapabilityBoundingSet, the
environment systemd gives a system service, SIGTERM to stop it (tests/package/installed.py).
"""

import os
import sys

import pytest

from tests.package.installed import (
    CONFFILE,
    KEYS,
    REPO,
    UnitProcess,
    free_port,
    read_unit,
    set_listeners,
)

if os.environ.get("CONSOLEPROXY_PACKAGE_TEST") != "1":
    collect_ignore_glob = ["test_*.py"]

sys.path.insert(0, str(REPO / "tests" / "e2e"))
import testbed as _testbed  # noqa: E402

GUEST_PREFIX = "cp-e2e-pkg-"


@pytest.fixture(scope="session")
def unit():
    return read_unit()


@pytest.fixture(scope="session")
def api_key():
    lines = [line.strip() for line in KEYS.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")][0]


@pytest.fixture(scope="session")
def guest():
    tb = _testbed.ensure_testbed()
    for name in tb.guest_names(prefix=GUEST_PREFIX):  # of earlier, interrupted runs
        tb.remove_guest(name)
    name = f"{GUEST_PREFIX}{os.getpid()}"
    g = tb.make_guest(name, vnc_password="pkgpw1")
    yield g
    g.undefine()


@pytest.fixture(scope="module")
def listeners():
    """
    Free loopback ports written into the installed conffile (as an operator would edit it), so
    the test service cannot collide with anything else on this machine.
    """
    api, console, xvpvnc, native = free_port(), free_port(), free_port(), free_port()
    CONFFILE.write_text(set_listeners(CONFFILE.read_text(), {
        "api": f"tcp:{api}:interface=127.0.0.1",
        "console": f"tcp:{console}:interface=127.0.0.1",
        "xvpvnc": f"tcp:{xvpvnc}:interface=127.0.0.1",
        "vnc": f"tcp:{native}:interface=127.0.0.1",
    }))
    return {"api_url": f"http://127.0.0.1:{api}", "ws_url": f"ws://127.0.0.1:{console}"}


@pytest.fixture(scope="module")
def service(unit, listeners, guest, tmp_path_factory):
    proc = UnitProcess(unit, tmp_path_factory.mktemp("unit") / "journal.log")
    proc.start(listeners["api_url"])
    proc.api_url, proc.ws_url = listeners["api_url"], listeners["ws_url"]
    yield proc
    proc.stop()
