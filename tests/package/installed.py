"""
Helpers for the tests of the installed package: the systemd unit read as data, and the service
started the way that unit starts it.
"""

import os
import pwd
import shlex
import signal
import subprocess
from pathlib import Path

from tests.support.api import wait_until_healthy
from tests.support.ports import (
    free_port,  # noqa: F401 (tests/package/conftest.py imports it from here)
)

REPO = Path(__file__).resolve().parents[2]
UNIT = Path("/lib/systemd/system/consoleproxy.service")
CONFFILE = Path("/etc/consoleproxy/consoleproxy.conf")
KEYS = Path("/etc/consoleproxy/api-keys")


def read_unit(path=UNIT):
    """
    A systemd unit file as {section: {key: [values in order]}} (no line continuations).
    """
    sections, current = {}, None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def set_listeners(text, listeners):
    """
    The config text with the [listen] keys in C{listeners} set (as an operator edits it).
    """
    out, section = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped[1:-1]
        key = stripped.partition("=")[0].strip()
        if section == "listen" and "=" in stripped and key in listeners:
            line = f"{key} = {listeners[key]}"
        out.append(line)
    return "\n".join(out) + "\n"


class UnitProcess:
    """
    The installed service, started as its unit says.

    @ivar pid: the service's process id (setpriv execs into twistd3: same process).
    """

    def __init__(self, unit, log_path):
        self.service = unit["Service"]
        self.log_path = Path(log_path)
        self.process = None

    def one(self, key, default=None):
        values = self.service.get(key)
        return values[-1] if values else default

    @property
    def user(self):
        return pwd.getpwnam(self.one("User"))

    def command(self):
        user = self.user
        group = self.one("Group")
        cmd = ["setpriv", f"--reuid={user.pw_name}", f"--regid={group}", "--init-groups"]
        if self.one("NoNewPrivileges") == "yes":
            cmd.append("--no-new-privs")
        if self.service.get("CapabilityBoundingSet") == [""]:
            cmd += ["--bounding-set=-all", "--inh-caps=-all"]
        cmd += ["--"] + shlex.split(self.one("ExecStart"))
        if self.one("LimitNOFILE"):
            limit = self.nofile_limit()
            cmd = ["prlimit", f"--nofile={limit}:{limit}"] + cmd  # execs: the same process
        return cmd

    def nofile_limit(self):
        """
        The unit's C{LimitNOFILE}, within this machine's hard limit: systemd (PID 1) may raise
        the hard limit, a test host's root may not (a container's cap, 20,000 here).
        """
        import resource

        return min(int(self.one("LimitNOFILE")), resource.getrlimit(resource.RLIMIT_NOFILE)[1])

    def environment(self):
        user = self.user
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name,
            "SHELL": user.pw_shell,
        }
        for key, var, base in (("StateDirectory", "STATE_DIRECTORY", "/var/lib"),
                               ("LogsDirectory", "LOGS_DIRECTORY", "/var/log"),
                               ("RuntimeDirectory", "RUNTIME_DIRECTORY", "/run")):
            if self.one(key):
                env[var] = f"{base}/{self.one(key)}"
        return env

    def _runtime_directory(self):
        name = self.one("RuntimeDirectory")
        return Path("/run") / name if name else None

    def start(self, api_url, timeout=30):
        # What systemd does before ExecStart: the RuntimeDirectory, owned by the service user.
        runtime = self._runtime_directory()
        if runtime is not None:
            runtime.mkdir(mode=int(self.one("RuntimeDirectoryMode", "0755"), 8), exist_ok=True)
            os.chown(runtime, self.user.pw_uid, self.user.pw_gid)
        umask = int(self.one("UMask", "0022"), 8)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(), env=self.environment(), cwd=self.one("WorkingDirectory", "/"),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.umask(umask), start_new_session=True)
        self.pid = self.process.pid
        wait_until_healthy(api_url, self.process, self.log, timeout, interval=0.2,
                           what="service")
        return self

    def stop(self):
        """
        SIGTERM (KillSignal), then SIGKILL after TimeoutStopSec, as systemd stops it.

        @return: the exit status (negative: the signal that ended it).
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(getattr(signal, self.one("KillSignal", "SIGTERM")))
            try:
                self.process.wait(float(self.one("TimeoutStopSec", "90")))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        runtime = self._runtime_directory()
        if runtime is not None and runtime.exists():
            subprocess.run(["rm", "-rf", str(runtime)], check=True)
        return self.process.returncode

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
