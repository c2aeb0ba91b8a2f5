"""
Runs the real L{ConsoleProxyService} in its own process, without twistd and without libvirt: a
L{FakeHypervisor} holds one running domain whose VNC server is the benchmark backend. Used by
the benchmark and by the flow-control test, so that the service's RSS and CPU are its own.

Run: C{python -m bench.service --vnc 127.0.0.1:PORT --workdir DIR [--serial-pty /dev/pts/N]
[--set SECTION.KEY=VALUE]}; when listening, it prints one JSON line: C{{"pid", "api_url",
"console_port", "xvpvnc_port" (null when this build serves no xvpvnc listener), "key",
"instance", "serial_instance" (null without C{--serial-pty})}}. Logs go to
C{DIR/service.log}. SIGTERM stops it.

With C{--serial-pty}, a second running domain ("bench-serial") has that PTY (the follower side
of a pair the caller opened and writes to, playing QEMU) as its serial console, and the service
captures it from the start, as it captures a real domain's console (L{SERIAL_SETTINGS}).

L{ServiceProcess} starts and stops that process from Python.
"""

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

INSTANCE = "5d9f2c1e-7a4b-4c3d-9e8f-0a1b2c3d4e5f"
REPO = Path(__file__).resolve().parents[1]

# Generous limits: the benchmark opens thousands of sessions on one instance, quickly.
BENCH_SETTINGS = {
    "sessions.max_vnc_sessions": "100000",
    "sessions.idle_timeout": "3600",
    "tokens.token_ttl": "3600",
    "vnc.connect_timeout": "10",
    "vnc.handshake_timeout": "30",
}

SERIAL_INSTANCE = "9b1e4c2a-3f6d-4e8a-b7c5-1d2e3f4a5b6c"
# Serial fan-out: only the serial domain is captured; room for the benchmark's viewers; no
# scrollback, so that every run's viewers receive exactly what the source wrote in that run.
SERIAL_SETTINGS = {
    "serial.domains": "bench-serial",
    "serial.max_viewers": "1000",
    "serial.scrollback": "0",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run(args):
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from vncproxy import config as _config
    from vncproxy.hypervisor import VncEndpoint
    from vncproxy.hypervisor.fake import FakeHypervisor
    from vncproxy.service import ConsoleProxyService

    raise_fd_limit()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "service.log", "a", encoding="utf-8")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log)], redirectStandardIO=False)

    api_port, console_port, xvp_port = free_port(), free_port(), free_port()
    settings = dict(BENCH_SETTINGS)
    if args.serial_pty:
        settings.update(SERIAL_SETTINGS)
    settings.update({
        "listen.api": f"tcp:{api_port}:interface=127.0.0.1",
        "listen.console": f"tcp:{console_port}:interface=127.0.0.1",
        "listen.xvpvnc": f"tcp:{xvp_port}:interface=127.0.0.1",
        "console.public_url": f"http://127.0.0.1:{console_port}",
        "service.state_dir": str(workdir / "state"),
    })
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = value
    overrides = [(*key.split(".", 1), value) for key, value in settings.items()]
    config = _config.load(None, overrides)

    host, _, port = args.vnc.rpartition(":")
    hypervisor = FakeHypervisor(reactor)  # the reactor: it opens serial PTYs
    hypervisor.add_domain("bench", uuid=INSTANCE,
                          vnc=VncEndpoint(host=host, port=int(port), password=args.password))
    if args.serial_pty:
        hypervisor.add_domain("bench-serial", uuid=SERIAL_INSTANCE, serial_pty=args.serial_pty)
    key = "bench-" + os.urandom(16).hex()
    service = ConsoleProxyService(config, reactor, hypervisor, [key])
    has_xvpvnc = "xvpvnc" in getattr(service, "namedServices", {})

    def started():
        service.startService()
        print(json.dumps({
            "pid": os.getpid(),
            "api_url": f"http://127.0.0.1:{api_port}",
            "console_port": console_port,
            "xvpvnc_port": xvp_port if has_xvpvnc else None,
            "key": key,
            "instance": INSTANCE,
            "serial_instance": SERIAL_INSTANCE if args.serial_pty else None,
        }), flush=True)

    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vnc", required=True, help="HOST:PORT of the VNC server (the backend)")
    parser.add_argument("--password", default=None, help="its VNC password, if any")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--serial-pty", default=None, metavar="PATH",
                        help="the follower side of a PTY pair: serve it as a domain's serial "
                             "console")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    _run(parser.parse_args(argv))


class ServiceProcess:
    """
    The service under test as a child process.

    @ivar info: the JSON line it printed once listening (ports, API key, instance).
    """

    def __init__(self, vnc, workdir, python=sys.executable, settings=(), serial_pty=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [python, "-m", "bench.service", "--vnc", vnc, "--workdir", str(self.workdir)]
        if serial_pty:
            command += ["--serial-pty", serial_pty]
        for item in settings:
            command += ["--set", item]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self._stderr = open(self.workdir / "service.stderr", "ab")
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                        stderr=self._stderr)
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise RuntimeError(f"bench service exited with {self.process.returncode}: "
                               + (self.workdir / "service.stderr").read_text(errors="replace"))
        self.info = json.loads(line)
        self.pid = self.process.pid
        self._wait_healthy()

    def _wait_healthy(self, timeout=20):
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.info["api_url"] + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("bench service did not answer /healthz")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self._stderr.close()

    def log(self):
        path = self.workdir / "service.log"
        return path.read_text(errors="replace") if path.exists() else ""


if __name__ == "__main__":
    main()
