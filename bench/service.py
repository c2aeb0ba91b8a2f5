"""
Runs the real L{ConsoleProxyService} in its own process, without twistd and without libvirt: a
L{FakeHypervisor} holds one running domain whose VNC server is the benchmark backend. Used by
the benchmark and by the flow-control test, so that the service's RSS and CPU are its own.

Run: C{python -m bench.service --vnc 127.0.0.1:PORT --workdir DIR [--set SECTION.KEY=VALUE]
[--domains N] [--serial-pty /dev/pts/N ...]}; when listening, it prints one JSON line:
C{{"pid", "api_url", "console_port", "xvpvnc_port" (null when this build serves no xvpvnc
listener), "key", "instance", "instances", "serial_instances"}}. C{instances} lists the UUIDs of
the C{--domains} domains (default 1; the first is C{instance}) whose VNC server is the backend;
C{serial_instances} one domain per C{--serial-pty}, whose serial console is that PTY (the
caller plays the guest on its leader side) and which has no VNC server. Logs go to
C{DIR/service.log}. SIGTERM stops it.

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


# What the benchmark's serial fan-out asks of the service (python -m bench passes these with
# one --serial-pty): only that domain is captured; room for the viewers; no scrollback, so
# that every run's viewers receive exactly what the source wrote in that run.
SERIAL_SETTINGS = {
    "serial.domains": "bench-serial-0",
    "serial.max_viewers": "1000",
    "serial.scrollback": "0",
}


def instance_uuid(index, serial=False):
    """
    The UUID of the bench's VNC domain (or serial domain) number C{index}; VNC domain 0 is
    L{INSTANCE}.
    """
    if index == 0 and not serial:
        return INSTANCE
    return f"5d9f2c1e-7a4b-4c3d-{'5e71' if serial else '9e8f'}-{index:012x}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _trace_memory(directory):
    """
    Leak hunting: with C{CONSOLEPROXY_BENCH_TRACEMALLOC=DIR} in the environment, trace Python
    allocations, and on each SIGUSR2 collect the garbage and dump a snapshot to
    C{DIR/PID-N.snap} (compare two with C{tracemalloc.Snapshot.load(...).compare_to(...)}).
    """
    if not directory:
        return
    import gc
    import tracemalloc

    tracemalloc.start(8)
    count = iter(range(1, 1 << 30))

    def dump(signum, frame):
        gc.collect()  # what is still reachable: cyclic garbage is not a leak
        path = Path(directory) / f"{os.getpid()}-{next(count)}.snap"
        tracemalloc.take_snapshot().dump(str(path))

    signal.signal(signal.SIGUSR2, dump)


def _profile_cpu(directory, run):
    """
    Profiling: with C{CONSOLEPROXY_BENCH_CPROFILE=DIR} in the environment, C{run()} (the
    reactor) runs under cProfile, and the statistics go to C{DIR/PID.prof} when it stops (read
    them with C{python -m pstats}), with Python's garbage collections (count and objects
    collected per generation while the reactor ran) in C{DIR/PID.gc.json}; otherwise C{run()}
    as it is.
    """
    if not directory:
        return run()
    import cProfile
    import gc

    profiler = cProfile.Profile()
    before = gc.get_stats()
    try:
        return profiler.runcall(run)
    finally:
        profiler.dump_stats(str(Path(directory) / f"{os.getpid()}.prof"))
        during = [{key: after[key] - start[key] for key in after}
                  for start, after in zip(before, gc.get_stats())]
        (Path(directory) / f"{os.getpid()}.gc.json").write_text(json.dumps(during))


def _run(args):
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from vncproxy import config as _config
    from vncproxy import relay
    from vncproxy.hypervisor import VncEndpoint
    from vncproxy.hypervisor.fake import FakeHypervisor
    from vncproxy.service import ConsoleProxyService

    raise_fd_limit()
    _trace_memory(os.environ.get("CONSOLEPROXY_BENCH_TRACEMALLOC"))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "service.log", "a", encoding="utf-8")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log)], redirectStandardIO=False)

    api_port, console_port, xvp_port = free_port(), free_port(), free_port()
    settings = dict(BENCH_SETTINGS)
    settings.update({
        "listen.api": f"tcp:{api_port}:interface=127.0.0.1",
        "listen.console": f"tcp:{console_port}:interface=127.0.0.1",
        "listen.xvpvnc": f"tcp:{xvp_port}:interface=127.0.0.1",
        "listen.vnc": f"tcp:{free_port()}:interface=127.0.0.1",
        "console.public_url": f"http://127.0.0.1:{console_port}",
        "service.state_dir": str(workdir / "state"),
    })
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = value
    overrides = [(*key.split(".", 1), value) for key, value in settings.items()]
    config = _config.load(None, overrides)

    host, _, port = args.vnc.rpartition(":")
    hypervisor = FakeHypervisor(reactor)  # the reactor serves serial consoles (real PTYs)
    vnc = VncEndpoint(host=host, port=int(port), password=args.password)
    instances = [instance_uuid(i) for i in range(args.domains)]
    for i, uuid in enumerate(instances):
        hypervisor.add_domain("bench" if i == 0 else f"bench-{i}", uuid=uuid, vnc=vnc)
    serial_instances = [instance_uuid(i, serial=True) for i in range(len(args.serial_pty))]
    for i, (uuid, path) in enumerate(zip(serial_instances, args.serial_pty)):
        hypervisor.add_domain(f"bench-serial-{i}", uuid=uuid, serial_pty=path)
    key = "bench-" + os.urandom(16).hex()
    relay.enable_dispatch(reactor, config)  # as vncproxy.tap.makeService does
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
            "instances": instances,
            "serial_instances": serial_instances,
        }), flush=True)

    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    _profile_cpu(os.environ.get("CONSOLEPROXY_BENCH_CPROFILE"), reactor.run)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vnc", required=True, help="HOST:PORT of the VNC server (the backend)")
    parser.add_argument("--password", default=None, help="its VNC password, if any")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--domains", type=int, default=1,
                        help="how many domains have the backend as their VNC server")
    parser.add_argument("--serial-pty", action="append", default=[], metavar="PATH",
                        help="add a domain whose serial console is this PTY (repeatable)")
    _run(parser.parse_args(argv))


class ServiceProcess:
    """
    The service under test as a child process.

    @ivar info: the JSON line it printed once listening (ports, API key, instances).

    @param domains: how many VNC domains (see the module's C{--domains}).
    @param serial_ptys: PTY paths, one serial domain each (see C{--serial-pty}).
    """

    def __init__(self, vnc, workdir, python=sys.executable, settings=(), domains=1,
                 serial_ptys=()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [python, "-m", "bench.service", "--vnc", vnc, "--workdir", str(self.workdir),
                   "--domains", str(domains)]
        for item in settings:
            command += ["--set", item]
        for path in serial_ptys:
            command += ["--serial-pty", path]
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
