"""
The benchmark command: C{python -m bench [--quick] [--only bulk,rtt,...]}.

It starts its own processes on loopback: the backend (L{bench.backend}), consoleproxy
(L{bench.service}: the real service, a fake hypervisor) and, when installed, websockify (the
incumbent, with a token file); it runs the measures of L{bench.measures}, each target in turn,
and prints one table where every figure stands beside the same run's baseline.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty
from datetime import datetime, timezone
from pathlib import Path

from bench import proc
from bench.clients import (
    BareRelayTarget,
    DirectTarget,
    ProxyWebSocketTarget,
    ProxyXvpTarget,
    WebsockifyTarget,
)
from bench.measures import MEASURES
from bench.report import render
from bench.rows import Skip
from bench.service import REPO, SERIAL_SETTINGS, ServiceProcess, free_port, raise_fd_limit

BENCH_VENV = REPO / ".bench-venv"

PROFILES = {
    "full": dict(bulk_bytes=256 << 20, upload_bytes=128 << 20, repeats=5, rtt_count=2000, setup_count=100,
                 idle_sessions=1000, memory_repeats=2, websockify_idle_sessions=200,
                 active_sessions=100, active_seconds=2.0, active_repeats=3,
                 scale_sessions=10000, storm_sessions=1000, scale_domains=100),
    "quick": dict(bulk_bytes=64 << 20, upload_bytes=32 << 20, repeats=3, rtt_count=1000, setup_count=50,
                  idle_sessions=1000, memory_repeats=1, websockify_idle_sessions=100,
                  active_sessions=100, active_seconds=1.5, active_repeats=2,
                  scale_sessions=2000, storm_sessions=1000, scale_domains=100),
}

# Serial fan-out (measures.serial_fanout): source output per run, viewers, runs.
PROFILES["full"].update(serial_bytes=8 << 20, serial_viewers=100, serial_repeats=3,
                        serial_rate=1_000_000)
PROFILES["quick"].update(serial_bytes=2 << 20, serial_viewers=100, serial_repeats=3,
                         serial_rate=1_000_000)


def find_websockify(option):
    if option == "none":
        return None
    if option:
        return option
    candidate = BENCH_VENV / "bin" / "websockify"
    if candidate.exists():
        return str(candidate)
    return shutil.which("websockify")


def find_py_spy():
    for candidate in (BENCH_VENV / "bin" / "py-spy", Path(sys.executable).with_name("py-spy")):
        if candidate.exists():
            return str(candidate)
    return shutil.which("py-spy")


def setup_env():
    """
    Create .bench-venv with websockify (the incumbent, from PyPI) and py-spy (the profiler).
    """
    if not (BENCH_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", "websockify", "py-spy"],
                   check=True)
    print(f"websockify and py-spy installed in {BENCH_VENV}")


def _wait_port(port, process, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class Bench:
    """
    The processes under test and the parameters of this run.
    """

    def __init__(self, args, profile):
        for name, value in profile.items():
            setattr(self, name, value)
        self.workdir = Path(tempfile.mkdtemp(prefix="consoleproxy-bench-"))
        self.websockify_path = find_websockify(args.websockify)
        self.profile_out = args.profile
        self.service_settings = list(args.set)
        self.notes = []
        self.backend = None
        self.service = None
        self.websockify = None
        self.bare = None
        self.py_spy = None
        self.targets = []

    # -- processes ------------------------------------------------------------------------------

    def start(self):
        self.backend = subprocess.Popen([sys.executable, "-m", "bench.backend"], cwd=REPO,
                                        env=dict(os.environ, PYTHONPATH=str(REPO)),
                                        stdout=subprocess.PIPE)
        self.backend_port = int(self.backend.stdout.readline())
        self.bare = subprocess.Popen([sys.executable, "-m", "bench.barerelay",
                                      str(self.backend_port)], cwd=REPO,
                                     env=dict(os.environ, PYTHONPATH=str(REPO)),
                                     stdout=subprocess.PIPE)
        self.bare_port = int(self.bare.stdout.readline())
        # The serial fan-out's "guest": the bench writes to the leader side, the service reads
        # the follower (its path), as it reads QEMU's /dev/pts/N.
        self.serial_leader, self._serial_follower = os.openpty()
        tty.setraw(self._serial_follower)
        self._start_service()
        if self.websockify_path:
            self._start_websockify()
        else:
            self.notes.append("websockify not found (python -m bench --setup installs it): "
                              "its column is empty")
        self._make_targets()

    def _start_service(self):
        self.service = ServiceProcess(f"127.0.0.1:{self.backend_port}",
                                      self.workdir / f"service-{time.monotonic_ns()}",
                                      settings=[f"{key}={value}"
                                                for key, value in SERIAL_SETTINGS.items()]
                                      + self.service_settings,
                                      serial_ptys=[os.ttyname(self._serial_follower)])
        self.info = self.service.info
        if self.profile_out and self.py_spy is None:
            spy = find_py_spy()
            if spy is None:
                raise SystemExit("--profile needs py-spy (python -m bench --setup)")
            self.py_spy = subprocess.Popen(
                [spy, "record", "--pid", str(self.service.pid), "--rate", "200",
                 "--output", self.profile_out, "--format",
                 "speedscope" if self.profile_out.endswith(".json") else "flamegraph"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _start_websockify(self):
        port = free_port()
        tokens = self.workdir / "websockify-tokens"
        tokens.write_text(f"{WebsockifyTarget.TOKEN}: 127.0.0.1:{self.backend_port}\n")
        self._websockify_log = open(self.workdir / "websockify.log", "ab")
        self.websockify = subprocess.Popen(
            [self.websockify_path, "--token-plugin", "ReadOnlyTokenFile",
             "--token-source", str(tokens), "--log-file", str(self.workdir / "websockify.log"),
             f"127.0.0.1:{port}"],
            stdout=self._websockify_log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(port, self.websockify)
        self.websockify_port = port

    def _make_targets(self):
        self.targets = [DirectTarget(self.backend_port), ProxyWebSocketTarget(self.info),
                        BareRelayTarget(self.bare_port)]
        if self.info.get("xvpvnc_port"):
            self.targets.append(ProxyXvpTarget(self.info))
        else:
            note = "xvpvnc: this build serves no xvpvnc listener: its column is empty"
            if note not in self.notes:
                self.notes.append(note)
        if self.websockify is not None:
            self.targets.append(WebsockifyTarget(self.websockify_port))

    def server_pid(self, name):
        if name in ("websocket", "xvpvnc"):
            return self.service.pid
        if name == "websockify":
            return self.websockify.pid
        if name == "bare":
            return self.bare.pid
        return None

    def scale_service(self):
        """
        A fresh service with C{scale_domains} domains for the scale measure, and its WebSocket
        target (the caller stops the service).
        """
        service = ServiceProcess(f"127.0.0.1:{self.backend_port}",
                                 self.workdir / f"scale-{time.monotonic_ns()}",
                                 # every connection comes from 127.0.0.1 here: lift the cap
                                 # on one address's unfinished requests (32 by default)
                                 settings=["http.max_pending_per_address=1000000",
                                           *self.service_settings],
                                 domains=self.scale_domains)
        return service, ProxyWebSocketTarget(service.info)

    def memory_targets(self):
        out = []
        for target in self.targets:
            if target.name in ("websocket", "xvpvnc"):
                out.append((target, proc.rss, self.idle_sessions))
            elif target.name == "websockify":
                out.append((target, proc.pss, self.websockify_idle_sessions))
        return out

    def after_memory_run(self, name):
        """
        Memory runs need a fresh service: freed memory stays in the process for reuse.
        """
        if name in ("websocket", "xvpvnc"):
            self._stop_py_spy()
            self.service.stop()
            self._start_service()
            self._make_targets()

    def _stop_py_spy(self):
        if self.py_spy is not None and self.py_spy.poll() is None:
            self.py_spy.send_signal(signal.SIGINT)
            try:
                self.py_spy.wait(30)
            except subprocess.TimeoutExpired:
                self.py_spy.kill()
        if self.py_spy is not None:
            self.notes.append(f"py-spy profile of the service written to {self.profile_out}")
            self.profile_out = None  # one profile per run: the first service process's
        self.py_spy = None

    def stop(self):
        self._stop_py_spy()
        if self.service is not None:
            self.service.stop()
        for process in (self.websockify, self.bare, self.backend):
            if process is not None and process.poll() is None:
                if process is self.websockify:
                    os.killpg(process.pid, signal.SIGTERM)  # its forked children too
                else:
                    process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for process in (self.bare, self.backend):
            if process is not None:
                process.stdout.close()
        for fd in (getattr(self, "serial_leader", None), getattr(self, "_serial_follower", None)):
            if fd is not None:
                os.close(fd)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="consoleproxy benchmark: throughput, keystroke latency, set-up time, "
                    "memory per session, many sessions; beside direct TCP and websockify.")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--only", default="",
                        help="comma-separated measures: " + ",".join(MEASURES))
    parser.add_argument("--websockify", default="",
                        help="websockify executable, or 'none' (default: .bench-venv, PATH)")
    parser.add_argument("--json", default="", help="also write the results to this file")
    parser.add_argument("--profile", default="",
                        help="record a py-spy profile of the service (.svg flame graph or "
                             ".json speedscope)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a configuration value of the service under test (repeatable), "
                             "e.g. relay.websocket_receive=false for an A/B run")
    parser.add_argument("--setup", action="store_true",
                        help="install websockify and py-spy into .bench-venv, then exit")
    args = parser.parse_args(argv)
    if args.setup:
        setup_env()
        return 0
    selected = [m for m in args.only.split(",") if m] or list(MEASURES)
    unknown = set(selected) - set(MEASURES)
    if unknown:
        parser.error(f"unknown measures: {', '.join(sorted(unknown))}")
    raise_fd_limit()
    profile = PROFILES["quick" if args.quick else "full"]
    bench = Bench(args, profile)
    rows, started, load_before = [], time.monotonic(), os.getloadavg()[0]
    try:
        bench.start()
        for name in selected:
            t0 = time.monotonic()
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            try:
                rows += MEASURES[name](bench)
            except Skip as e:
                bench.notes.append(str(e))
            except Exception as e:  # one measure failing must not lose the others' figures
                bench.notes.append(f"{name} failed: {type(e).__name__}: {e}")
            print(f"   {name} took {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    finally:
        bench.stop()
    header = (f"consoleproxy bench, {'quick' if args.quick else 'full'} profile, "
              f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
              f"load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end, "
              f"{time.monotonic() - started:.0f} s")
    print(render(header, rows, bench.notes))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"header": header, "notes": bench.notes,
             "rows": [{"measure": r.measure, "unit": r.unit, "values": r.values} for r in rows]},
            indent=1))
    return 0 if all(r.target[1] is None or r.target[1](r) is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
