"""
End to end, least privilege toward libvirt: the service runs as the unprivileged system user
``consoleproxy`` (not root, not in group ``libvirt``) against a real libvirtd that checks
every API call with polkit (``access_drivers = [ "polkit" ]``, ``auth_unix_rw = "polkit"``),
whose only rule is the one the Debian package ships
(``etc/polkit-1/rules.d/60-consoleproxy-libvirt.rules``).

The libvirtd is a private one (tests/e2e/privatelibvirtd.py), with a private D-Bus system bus
and polkitd (tests/e2e/privatepolkit.py), so that the shared daemon keeps its settings. What
is shown: a VNC console and a serial console (capture through libvirt's console stream, and
typing) work through the service; the same user, with the same connection, cannot stop,
pause, define or undefine a domain, nor read a domain it could not find; and a user the rule
does not name cannot even connect.
"""

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import websocket

from tests.e2e import privatelibvirtd, privatepolkit
from tests.e2e.service import REPO, ServiceProcess
from tests.e2e.testbed import Testbed
from tests.support import api
from tests.support.serialclient import SerialClient
from tests.support.viewer import RfbViewer, WebSocketPipe

PARENT = "/var/tmp/consoleproxy-testbed/private-libvirtd"
WORK = "/var/tmp/consoleproxy-testbed/least-privilege"
RULES = REPO / "etc" / "polkit-1" / "rules.d" / "60-consoleproxy-libvirt.rules"
USER = "consoleproxy"
POLKIT_ACL = {"access_drivers": '[ "polkit" ]', "auth_unix_rw": '"polkit"',
              "unix_sock_rw_perms": '"0777"', "unix_sock_ro_perms": '"0777"'}


def _unavailable(reason):
    if os.environ.get("CONSOLEPROXY_REQUIRE_E2E", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CONSOLEPROXY_REQUIRE_E2E is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def polkit(testbed, tmp_path_factory):
    reason = privatelibvirtd.unavailable_reason() or privatepolkit.unavailable_reason()
    if reason:
        _unavailable(reason)
    created = _ensure_user()
    root = Path(WORK) / f"polkit-{os.getpid()}"
    p = privatepolkit.PrivatePolkit(root, [RULES]).start()
    yield p
    p.close()
    shutil.rmtree(root, ignore_errors=True)
    if created:
        subprocess.run(["userdel", USER], check=True)


def _ensure_user():
    """
    The package's user, made for this module when the host has none (and removed after it):
    the Debian package test that runs later on the same host must see its own postinst make
    the user, with the package's home directory and groups.

    @return: whether it was made here.
    """
    try:
        pwd.getpwnam(USER)
        return False
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", USER], check=True)
        return True


@pytest.fixture(scope="module")
def daemon(polkit):
    privatelibvirtd.remove_leftovers(PARENT)
    d = privatelibvirtd.PrivateLibvirtd(f"{PARENT}/{os.getpid()}", conf=POLKIT_ACL,
                                        env=polkit.env()).start()
    yield d
    d.close()


@pytest.fixture(scope="module")
def guest(daemon, testbed):
    return Testbed(daemon.uri, testbed.directory).make_guest(
        f"cp-e2e-leastpriv-{os.getpid()}", vnc_password="secret1", start=False)


@pytest.fixture(scope="module")
def service(daemon, guest, polkit):
    """The service as user consoleproxy, started before the guest boots (its whole boot is
    captured through libvirt's console stream)."""
    svc = ServiceProcess(Path(WORK) / f"service-{os.getpid()}", libvirt__uri=daemon.uri,
                         serial__domains=guest.name)
    svc.start(user=USER, python=service_python(),
              env={"DBUS_SYSTEM_BUS_ADDRESS": polkit.env()["DBUS_SYSTEM_BUS_ADDRESS"]})
    guest.start(wait=False)
    guest.wait_for_serial(guest.prompt, 120)
    yield svc
    svc.stop()
    shutil.rmtree(svc.workdir, ignore_errors=True)


def service_python():
    """
    An interpreter the service user can run: ours (CI builds .venv from Debian's python3), or
    else a Debian venv's beside it (a venv made from a Python under /root, as on a developer's
    machine, is out of an unprivileged user's reach).
    """
    info = pwd.getpwnam(USER)
    ours = Path(sys.executable)
    for python in (ours, REPO / ".venv-debian" / "bin" / "python",
                   ours.parents[1].with_name(".venv-debian") / "bin" / "python"):
        try:
            usable = python.exists() and subprocess.run(
                [str(python), "-c", "import twisted, autobahn, libvirt"], capture_output=True,
                user=info.pw_uid, group=info.pw_gid, extra_groups=[]).returncode == 0
        except PermissionError:
            usable = False
        if usable:
            return str(python)
    _unavailable(f"no Python with the service's dependencies that user {USER!r} can run")


def as_user(user, code, daemon, polkit):
    """Run C{code} in Python as C{user} (its own group only) on the daemon: its output."""
    info = pwd.getpwnam(user)
    result = subprocess.run(
        [service_python(), "-c", f"import libvirt\nuri = {daemon.uri!r}\n{code}"],
        capture_output=True, text=True, timeout=60, env=polkit.env(),
        user=info.pw_uid, group=info.pw_gid, extra_groups=[])
    return result.stdout + result.stderr


def test_the_service_runs_unprivileged(service):
    """The twistd process runs as consoleproxy, in no other group."""
    status = Path(f"/proc/{service.process.pid}/status").read_text()
    uid = pwd.getpwnam(USER).pw_uid
    assert f"\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n" in status
    groups = next(line for line in status.splitlines() if line.startswith("Groups:"))
    assert groups.split()[1:] == [] or groups.split()[1:] == [str(pwd.getpwnam(USER).pw_gid)]


def test_vnc_and_serial_consoles_work_with_only_the_granted_permissions(service, guest):
    """A VNC console (the password read with read-secure) shows the guest's screen; the serial
    console (open-device) has the boot in its log, and typing reaches the guest."""
    status, grant = api.grant(service.api_url, service.key, guest.name)
    assert status == 200, grant
    ws = websocket.create_connection(grant["href"], timeout=20, suppress_origin=True)
    try:
        viewer = RfbViewer(WebSocketPipe(ws))
        init = viewer.handshake((3, 8))
        rects = viewer.framebuffer_update()
    finally:
        ws.close()
    assert init.width > 0 and rects
    status, log = api.call(f"{service.api_url}/v1/instances/{guest.uuid}/console_log",
                           key=service.key)
    assert status == 200 and guest.prompt in log
    status, grant = api.grant(service.api_url, service.key, guest.name, "serial")
    assert status == 200, grant
    client = SerialClient(grant["href"])
    try:
        client.type(b"echo least-$((6*7))-privilege\r")
        client.read_until(b"least-42-privilege")
    finally:
        client.disconnect()
    assert "Traceback" not in service.log() and "denied" not in service.log()


def test_the_service_user_can_do_nothing_else(service, guest, daemon, polkit):
    """The same user on its own connection: what the service needs works (the secure XML);
    stopping, pausing, defining, undefining and saving are refused by polkit."""
    out = as_user(USER, f"""
c = libvirt.open(uri)
d = c.lookupByName({guest.name!r})
print("secure-xml", "passwd=" in d.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
for what, call in [("destroy", d.destroy), ("suspend", d.suspend), ("undefine", d.undefine),
                   ("define", lambda: c.defineXML(d.XMLDesc(0).replace({guest.name!r}, "x"))),
                   ("managed-save", d.managedSave)]:
    try:
        call()
        print(what, "ALLOWED")
    except libvirt.libvirtError as e:
        print(what, "refused:", e.get_error_code() == libvirt.VIR_ERR_ACCESS_DENIED)
""", daemon, polkit)
    assert "secure-xml True" in out, out
    for what in ("destroy", "suspend", "undefine", "define", "managed-save"):
        assert f"{what} refused: True" in out, out
    assert guest.is_running()


def test_a_user_the_rule_does_not_name_cannot_connect(daemon, polkit, service):
    """nobody (uid 65534) is refused at the socket: only the rule's user gets in."""
    out = as_user("nobody", """
try:
    libvirt.open(uri)
    print("connected")
except libvirt.libvirtError as e:
    print("refused", e)
""", daemon, polkit)
    assert "refused" in out and "connected" not in out, out
