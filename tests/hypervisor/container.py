"""
A Debian 12 root booted with systemd-nspawn: systemd as PID 1, its own PID, mount, UTS, IPC and
network namespaces (only a loopback: nothing it listens on meets the host's ports), the host's
kernel. Recipe and figures: ../shared/testbed/SYSTEMD.md.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

#: What nspawn needs on a host whose PID 1 is not systemd (no D-Bus, no machined) with hybrid
#: cgroups: --register=no --keep-unit, and a pure cgroup v2 inside (libvirt cannot create v1
#: controllers on nspawn's read-only v1 mounts).
_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8"}
_NSPAWN = ["systemd-nspawn", "-q", "--register=no", "--keep-unit"]


class Container:
    """
    @param root: the root directory (a copy: the container changes it).
    @param name: the machine name (its host name too).
    @param log_path: where the container's console output goes.
    """

    def __init__(self, root, name, log_path):
        self.root = Path(root)
        self.name = name
        self.log_path = Path(log_path)
        self._nspawn = None
        self.leader = None

    # -- not booted: apt with the host's network ----------------------------------------
    def run_offline(self, *argv, timeout=600):
        """
        Run a command in the root, not booted, with the host's network (apt reaches the
        archive); returns the completed process (stdout and stderr as text).
        """
        assert self._nspawn is None, "the container is booted"
        cmd = _NSPAWN + ["-D", str(self.root), "--pipe", "env",
                         "DEBIAN_FRONTEND=noninteractive", *argv]
        return subprocess.run(cmd, env=_ENV, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    # -- booted ---------------------------------------------------------------------------
    def boot(self, timeout=60):
        self._log = open(self.log_path, "ab")
        self._nspawn = subprocess.Popen(
            _NSPAWN + ["--boot", "-D", str(self.root), "-M", self.name,
                       "--console=read-only", "--private-network"],
            env=_ENV, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.leader is None:
            if self._nspawn.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self._nspawn.returncode}; "
                                   f"see {self.log_path}")
            children = Path(f"/proc/{self._nspawn.pid}/task/{self._nspawn.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            # the child becomes the container's systemd once it has exec'd (before that it is
            # nspawn's own child, still in the host's namespaces)
            if pids and _comm(pids[0]) == "systemd":
                self.leader = int(pids[0])
                break
            if time.monotonic() > deadline:
                raise RuntimeError("no container leader")
            time.sleep(0.05)
        # Right after exec, systemd's bus is not up yet: systemctl answers "offline" or nothing.
        while True:
            state = self.run("systemctl", "is-system-running", "--wait", timeout=timeout).stdout
            if state.strip() not in ("", "offline", "unknown") or time.monotonic() > deadline:
                return state.strip()
            time.sleep(0.1)

    def command(self, *argv, namespaces="-a"):
        """The host command that runs C{argv} inside the booted container (all its
        namespaces, or only the network's with C{namespaces="-n"})."""
        return ["nsenter", "-t", str(self.leader), namespaces, "--", *argv]

    def run(self, *argv, timeout=120, check=False, input=None):
        result = subprocess.run(self.command(*argv), capture_output=True, text=True,
                                timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} exited {result.returncode}:\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def poweroff(self, timeout=60):
        """systemctl poweroff, and wait for nspawn to end."""
        if self._nspawn is None:
            return
        self.run("systemctl", "poweroff", "--no-block")
        try:
            self._nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._nspawn.pid, signal.SIGKILL)
            self._nspawn.wait()
        self._nspawn = None
        self.leader = None
        self._log.close()
        _remove_host_leftovers()

    def remove(self):
        self.poweroff()
        shutil.rmtree(self.root, ignore_errors=True)


def _comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _remove_host_leftovers():
    """nspawn leaves empty cgroup and /run directories on a host without systemd; an old one
    would be reused by the next boot."""
    for hierarchy in ("systemd", "unified"):
        for name in ("payload", "supervisor"):
            top = Path("/sys/fs/cgroup") / hierarchy / name
            if top.is_dir():
                for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass
    for path in ("/run/systemd/nspawn/locks", "/run/systemd/nspawn/propagate",
                 "/run/systemd/nspawn"):
        try:
            os.rmdir(path)
        except OSError:
            pass
