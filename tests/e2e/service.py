"""
Runs the real consoleproxy service (``twistd -n consoleproxy``) as a subprocess for e2e tests,
on free loopback ports, with its own config and API key file; collects its log output.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.api import wait_until_healthy
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """
    Settings are keyword arguments SECTION__KEY=VALUE (e.g. serial__domains="cp-e2e-serial-*").

    @ivar api_url: the token API's base URL.
    @ivar ws_url: the console listener's ws:// base URL.
    @ivar xvpvnc_port: the xvpvnc listener's port on 127.0.0.1.
    @ivar vnc_port: the native VNC listener's port on 127.0.0.1.
    @ivar key: the API key.
    """

    def __init__(self, workdir, **settings):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_port, self.console_port = free_port(), free_port()
        self.xvpvnc_port = free_port()
        self.vnc_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.ws_url = f"ws://127.0.0.1:{self.console_port}"
        self.key = "e2e-" + os.urandom(16).hex()
        keys = self.workdir / "api-keys"
        keys.write_text(f"# e2e\n{self.key}\n")
        keys.chmod(0o600)
        sections = {
            "listen": {"api": f"tcp:{self.api_port}:interface=127.0.0.1",
                       "console": f"tcp:{self.console_port}:interface=127.0.0.1",
                       "xvpvnc": f"tcp:{self.xvpvnc_port}:interface=127.0.0.1",
                       "vnc": f"tcp:{self.vnc_port}:interface=127.0.0.1"},
            "console": {"public_url": f"http://127.0.0.1:{self.console_port}"},
            "api": {"keys_file": str(keys)},
            "service": {"state_dir": str(self.workdir / "state")},
            # Capture no serial console unless a test names its guests: libvirtd is shared, and
            # other people's guests (and their tests' consoles) are not ours to open.
            "serial": {"domains": ""},
        }
        for dotted, value in settings.items():
            section, key = dotted.split("__", 1)
            sections.setdefault(section, {})[key] = str(value)
        self.config_path = self.workdir / "consoleproxy.conf"
        self.config_path.write_text("".join(
            f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) for s, kv in sections.items()))
        self.log_path = self.workdir / "service.log"
        self.process = None

    def start(self, timeout=30, user=None, env=None, python=None):
        """
        @param user: run the service as this user (and its group only), owning its work
            directory; C{None}: as ourselves.
        @param env: extra environment variables.
        @param python: the interpreter whose twistd runs the service (default: ours).
        """
        env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
        twistd = Path(python or sys.executable).with_name("twistd")
        self._log = open(self.log_path, "ab")
        as_user = {}
        if user is not None:
            for path in [self.workdir, *self.workdir.rglob("*")]:
                shutil.chown(path, user, user)
            as_user = dict(user=user, group=user, extra_groups=[])
        self.process = subprocess.Popen(
            [str(twistd), "--nodaemon", "--pidfile=", "consoleproxy",
             "--config", str(self.config_path)],
            cwd=self.workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT, **as_user)
        wait_until_healthy(self.api_url, self.process, self.log, timeout)
        return self

    def stop(self, timeout=15):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()
        return self.process.returncode if self.process else None

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
