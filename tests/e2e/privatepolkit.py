"""
A private D-Bus system bus and polkitd for tests of libvirt's polkit access driver, without
touching the host's (there may be none: the testbed runs no system bus).

polkitd runs in its own mount namespace where its action and rule directories are bind mounts
of directories under ``root``: the actions are the host's plus libvirt's (from
libvirt-daemon-system, which the testbed does not install: ``tools/testbed.sh deps`` extracts
its two policy files into ``/var/tmp/consoleproxy-testbed/polkit-actions``), the rules only the
ones given. Clients find the bus through ``DBUS_SYSTEM_BUS_ADDRESS`` (``env()``).

    polkit = PrivatePolkit(root, rules=[path]).start()
    libvirtd = PrivateLibvirtd(..., env=polkit.env())
    polkit.close()
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

POLKITD = "/usr/lib/polkit-1/polkitd"
LIBVIRT_ACTIONS = ("org.libvirt.api.policy", "org.libvirt.unix.policy")
ACTION_DIRS = ("/usr/share/polkit-1/actions", "/var/tmp/consoleproxy-testbed/polkit-actions")

_BUS_CONF = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def libvirt_actions():
    """The directory holding libvirt's polkit action files, or None."""
    for directory in ACTION_DIRS:
        if all((Path(directory) / name).is_file() for name in LIBVIRT_ACTIONS):
            return Path(directory)
    return None


def unavailable_reason():
    """Why a private polkit cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private polkitd needs root"
    for tool in ("dbus-daemon", "unshare"):
        if not shutil.which(tool):
            return f"no {tool}"
    if not os.access(POLKITD, os.X_OK):
        return f"no {POLKITD} (package polkitd)"
    if libvirt_actions() is None:
        return ("no libvirt polkit actions (org.libvirt.api.policy): run tools/testbed.sh deps")
    return None


class PrivatePolkit:
    def __init__(self, root, rules):
        self.root = Path(root)
        self.rules = [Path(r) for r in rules]
        self.socket = self.root / "bus" / "socket"
        self.bus = None
        self.polkitd = None

    def env(self):
        return dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={self.socket}")

    def start(self, timeout=15):
        for name in ("bus", "actions", "rules"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        for source in (Path("/usr/share/polkit-1/actions"), libvirt_actions()):
            for policy in source.glob("*.policy"):
                shutil.copy(policy, self.root / "actions" / policy.name)
        for rule in self.rules:
            shutil.copy(rule, self.root / "rules" / rule.name)
        conf = self.root / "bus" / "bus.conf"
        conf.write_text(_BUS_CONF.format(socket=self.socket))
        with open(self.root / "dbus.out", "ab") as out:
            self.bus = subprocess.Popen(["dbus-daemon", "--nofork", f"--config-file={conf}"],
                                        stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT)
        self._wait(lambda: self.socket.exists(), timeout, "the private bus")
        mounts = " && ".join(f"mount --bind {self.root / src} {dst}" for src, dst in (
            ("actions", "/usr/share/polkit-1/actions"), ("rules", "/usr/share/polkit-1/rules.d"),
            ("rules", "/etc/polkit-1/rules.d")))
        log = self.root / "polkitd.out"
        with open(log, "ab") as out:
            self.polkitd = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 f"{mounts} && exec {POLKITD}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env())
        self._wait(lambda: b"Acquired the name org.freedesktop.PolicyKit1" in log.read_bytes(),
                   timeout, "polkitd")
        return self

    def _wait(self, ready, timeout, what):
        deadline = time.monotonic() + timeout
        while not ready():
            for process in (self.bus, self.polkitd):
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"{what}: a process exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start within {timeout} s")
            time.sleep(0.05)

    def close(self):
        for process in (self.polkitd, self.bus):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
