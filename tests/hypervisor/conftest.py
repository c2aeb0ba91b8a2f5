"""
The package on a real Debian 12 hypervisor: tools/hypervisor-test builds (and caches) a
bookworm root with systemd and libvirt-daemon-system, then runs these with
CONSOLEPROXY_HYPERVISOR_TEST=1, CONSOLEPROXY_HYPERVISOR_ROOTFS (that root),
CONSOLEPROXY_DEB (the .deb under test) and CONSOLEPROXY_PREVIOUS_DEB (the previous version's,
for the upgrade). Without CONSOLEPROXY_HYPERVISOR_TEST nothing here is collected.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hypervisor.container import Container

if os.environ.get("CONSOLEPROXY_HYPERVISOR_TEST") != "1":
    collect_ignore_glob = ["test_*.py"]

REPO = Path(__file__).resolve().parents[2]
IMAGES = Path("/var/tmp/consoleproxy-testbed/images")
GUEST = "tiny"
GUEST_XML = """<domain type='qemu'>
  <name>tiny</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/var/lib/libvirt/images/tb/vmlinuz</kernel>
    <initrd>/var/lib/libvirt/images/tb/initrd.gz</initrd>
    <cmdline>console=tty0 console=ttyS0 panic=5 testbed.name=tiny</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='pty'>
      <log file='/var/log/libvirt/qemu/tiny-serial.log' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1' passwd='hvtest1'/>
    <video><model type='vga'/></video>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run tools/hypervisor-test")
    return value


class Hypervisor:
    """
    The booted container with the package's files at hand, and the figures measured on the way.
    """

    def __init__(self, container, deb, previous_deb):
        self.c = container
        self.deb = deb
        self.previous_deb = previous_deb
        self.figures = {}

    # -- inside ----------------------------------------------------------------------------
    def sh(self, script, timeout=120, check=True):
        return self.c.run("sh", "-c", script, timeout=timeout, check=check)

    def apt(self, *args, timeout=300):
        return self.c.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q",
                          "-o", "Dpkg::Use-Pty=0", *args, timeout=timeout, check=True)

    def unit_state(self):
        return self.sh("systemctl is-active consoleproxy", check=False).stdout.strip()

    def wait_active(self, timeout=60):
        deadline = time.monotonic() + timeout
        while self.unit_state() != "active":
            assert time.monotonic() < deadline, self.journal()
            time.sleep(0.2)

    def journal(self, *args):
        return self.sh("journalctl -u consoleproxy --no-pager -o cat " + " ".join(args),
                       check=False).stdout

    def api_key(self):
        lines = (self.c.root / "etc/consoleproxy/api-keys").read_text().splitlines()
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")][0]

    def wait_healthy(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            probe = subprocess.run(
                self.c.command("python3", "-c",
                               "import urllib.request as u; "
                               "print(u.urlopen('http://127.0.0.1:6090/healthz', timeout=2).status)"),
                capture_output=True, text=True)
            if probe.stdout.strip() == "200":
                return
            assert time.monotonic() < deadline, (probe.stderr, self.journal())
            time.sleep(0.2)

    # -- viewers, from the host's Python in the container's network namespace ---------------
    def probe_command(self, command, *args):
        return self.c.command(sys.executable, "-m", "tests.hypervisor.probe",
                              command, "http://127.0.0.1:6090", self.api_key(), GUEST, *args,
                              namespaces="-n")

    def probe_process(self, command, *args):
        return subprocess.Popen(self.probe_command(command, *args), cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(REPO)})

    def probe(self, command, *args, timeout=60):
        result = subprocess.run(self.probe_command(command, *args), cwd=REPO, capture_output=True,
                                text=True, timeout=timeout,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, (result.stdout, result.stderr, self.journal())
        return json.loads(result.stdout.splitlines()[-1])

    # -- the guest ---------------------------------------------------------------------------
    def serial_log(self):
        path = self.c.root / "var/log/libvirt/qemu/tiny-serial.log"
        return path.read_bytes() if path.exists() else b""

    def wait_guest_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while b"CONSOLEPROXY-TESTBED-READY" not in self.serial_log():
            assert time.monotonic() < deadline, "the guest did not boot"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def hypervisor(tmp_path_factory):
    rootfs = Path(_env("CONSOLEPROXY_HYPERVISOR_ROOTFS"))
    deb, previous = Path(_env("CONSOLEPROXY_DEB")), Path(_env("CONSOLEPROXY_PREVIOUS_DEB"))
    work = Path(tempfile_dir()) / f"hv-{os.getpid()}"
    t = time.monotonic()
    subprocess.run(["cp", "-a", "--reflink=auto", str(rootfs), str(work)], check=True)
    copy_seconds = time.monotonic() - t
    for src in (deb, previous):
        shutil.copy(src, work / "var/tmp" / src.name)
    images = work / "var/lib/libvirt/images/tb"
    images.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.gz"):
        shutil.copy(IMAGES / name, images / name)
    (work / "root/tiny.xml").write_text(GUEST_XML)
    log = REPO / "test-artifacts" / "hypervisor" / "container.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    hv = Hypervisor(Container(work, f"hv{os.getpid()}", log), deb, previous)
    hv.figures["copy of the cached root (s)"] = round(copy_seconds, 1)
    try:
        yield hv
    finally:
        if hv.c.leader is not None:
            hv.c.run("virsh", "-q", "-c", "qemu:///system", "destroy", GUEST)
        hv.c.remove()
        print("\n[hypervisor-test] figures:")
        for name, value in hv.figures.items():
            print(f"[hypervisor-test]   {name}: {value}")


def tempfile_dir():
    path = Path("/var/tmp/consoleproxy-hypervisor-test")
    path.mkdir(exist_ok=True)
    return path
