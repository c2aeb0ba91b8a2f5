"""
A private libvirtd for tests that must stop and restart the daemon (the shared one serves other
people's guests and tests).

A second system-mode libvirtd cannot simply run beside the first: its QEMU driver keeps state in
compiled-in places (/run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt, and
reads /etc/libvirt/qemu.conf). So it runs in its own mount namespace (``unshare -m``) where
those five directories are bind mounts of directories under ``root``, with its sockets in
``root/sock`` (outside the bind mounts, so reachable from the host) and its pid file in
``root``. Every start makes a new namespace over the same directories, so a restarted daemon
finds its running guests again, as libvirtd does after a restart. Its guests' serial ``<log>``
files are written by QEMU itself (``stdio_handler = "file"``: no virtlogd needed) and its VNC
ports come from 15900-15999, away from the shared daemon's 5900 upwards.

    daemon = PrivateLibvirtd(root).start()
    daemon.uri                 # qemu+unix:///system?socket=ROOT/sock/libvirt-sock
    daemon.stop(); daemon.start()
    daemon.close()             # destroy and undefine its guests, stop it
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import libvirt

_BIND = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
         "cache": "/var/cache/libvirt", "log": "/var/log/libvirt"}

_QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
vnc_listen = "127.0.0.1"
stdio_handler = "file"
remote_display_port_min = 15900
remote_display_port_max = 15999
"""


def unavailable_reason():
    """Why a private libvirtd cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private libvirtd needs root"
    if not shutil.which("unshare"):
        return "no unshare(1)"
    if subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                      capture_output=True, check=False).returncode:
        return "cannot make a mount namespace (unshare -m)"
    if not os.access("/usr/sbin/libvirtd", os.X_OK):
        return "no /usr/sbin/libvirtd"
    return None


class PrivateLibvirtd:
    """
    @param conf: libvirtd.conf settings replacing or added to ours, as written in the file
        (e.g. C{{"access_drivers": '[ "polkit" ]'}}).
    @param env: the daemon's environment (e.g. C{DBUS_SYSTEM_BUS_ADDRESS} of a private bus).
    """

    def __init__(self, root, conf=None, env=None):
        self.root = Path(root)
        self.conf = dict(conf or {})
        self.env = env
        self.sock = self.root / "sock" / "libvirt-sock"
        self.uri = f"qemu+unix:///system?socket={self.sock}"
        self.process = None

    def _prepare(self):
        for name in list(_BIND) + ["sock"]:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        for sub in ("lib/qemu", "log/qemu", "cache/qemu"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "etc" / "qemu.conf").write_text(_QEMU_CONF)
        settings = {"unix_sock_dir": f'"{self.root / "sock"}"',
                    "unix_sock_ro_perms": '"0700"', "unix_sock_rw_perms": '"0700"',
                    "auth_unix_ro": '"none"', "auth_unix_rw": '"none"',
                    "log_outputs": f'"3:file:{self.root / "libvirtd.log"}"', **self.conf}
        (self.root / "etc" / "libvirtd.conf").write_text(
            "".join(f"{key} = {value}\n" for key, value in settings.items()))
        # The shared daemon's QEMU capability cache saves the ~8 s probe (it is still checked).
        shared = Path("/var/cache/libvirt/qemu/capabilities")
        mine = self.root / "cache" / "qemu" / "capabilities"
        if shared.is_dir() and not mine.exists():
            shutil.copytree(shared, mine)

    def start(self, timeout=30):
        """Start the daemon (a new namespace over the same directories); wait until it answers."""
        self._prepare()
        mounts = "".join(f"mount --bind {self.root / k} {v} && " for k, v in _BIND.items())
        script = (f"{mounts}exec /usr/sbin/libvirtd -f {self.root / 'etc' / 'libvirtd.conf'} "
                  f"-p {self.root / 'libvirtd.pid'}")
        with open(self.root / "daemon.out", "ab") as out:
            self.process = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"private libvirtd exited with {self.process.returncode}: "
                                   + (self.root / "daemon.out").read_text(errors="replace"))
            if time.monotonic() > deadline:
                raise RuntimeError(f"private libvirtd does not answer on {self.sock}")
            time.sleep(0.05)
        return self

    def answers(self):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(self.sock))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, timeout=30):
        """SIGTERM the daemon and wait for it to exit (its guests keep running)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def close(self):
        """Destroy and undefine every guest of this daemon, then stop it."""
        try:
            if self.process is not None and self.process.poll() is None:
                conn = libvirt.open(self.uri)
                try:
                    for dom in conn.listAllDomains():
                        with contextlib.suppress(libvirt.libvirtError):
                            if dom.isActive():
                                dom.destroy()
                        with contextlib.suppress(libvirt.libvirtError):
                            dom.undefine()
                finally:
                    conn.close()
        finally:
            self.stop()


def qemu_pid(name):
    """The pid of the QEMU process running guest C{name} (from its command line), or None."""
    needle = f"guest={name},".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"qemu-system" in cmdline and needle in cmdline:
            return int(entry)
    return None


def remove_leftovers(parent):
    """
    Stop the private daemons (and their guests) of earlier test runs whose process is gone:
    directories ``parent/<pid>``.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return
    for root in parent.iterdir():
        if not root.name.isdigit() or Path(f"/proc/{root.name}").exists():
            continue
        daemon = PrivateLibvirtd(root)
        try:
            pid = int((root / "libvirtd.pid").read_text().strip())
            alive = Path(f"/proc/{pid}/cmdline").read_bytes().find(b"libvirtd") >= 0
        except (OSError, ValueError):
            alive = False
        if alive and daemon.answers():
            with contextlib.suppress(libvirt.libvirtError):
                conn = libvirt.open(daemon.uri)
                for dom in conn.listAllDomains():
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.undefine()
                conn.close()
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
