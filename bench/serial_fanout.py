"""
Benchmark (not a test): serial console fan-out from one real guest to many viewers.

A busybox guest under libvirt prints `seq 1 N` on its serial console as fast as QEMU's emulated
UART goes, three times: with no viewer attached, with one (the writer), and with one writer
plus VIEWERS read-only viewers. For each run it reports the guest's output rate, the CPU time
the service process used (utime + stime from /proc, so the benchmark's own clients do not
count), and, for every viewer, whether it received exactly the bytes the service logged
between the two markers: "bytes lost" must be 0, and so must slow-viewer disconnects.

    sudo .venv/bin/python bench/serial_fanout.py [--viewers 100] [--lines 100000] [--source pty]

Needs what the e2e tests need (root, tools/testbed.sh up). The service runs as a twistd
subprocess (tests/e2e/service.py) reading the console through libvirt; the viewers are
WebSocket clients in this process, all on one Twisted reactor.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import testbed as _testbed  # noqa: E402
from autobahn.twisted.websocket import (  # noqa: E402
    WebSocketClientFactory,
    WebSocketClientProtocol,
    connectWS,
)
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402

from tests.e2e.service import ServiceProcess  # noqa: E402
from tests.support import api  # noqa: E402

BEGIN, END = b"FANOUT-BEGIN-2", b"FANOUT-END-2"


def cpu_seconds(pid, task=None):
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def reactor_cpu_seconds(pid):
    """CPU of the service's main thread: the reactor (the rest is libvirt's threads)."""
    return cpu_seconds(pid, pid)


class Viewer(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.append(self)
        if self.factory.on_open is not None and not self.factory.on_open.called:
            self.factory.on_open.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.received += payload

    def onClose(self, wasClean, code, reason):
        self.factory.close = (code, reason)


def connect(href):
    factory = WebSocketClientFactory(href)
    factory.protocol = Viewer
    factory.received = bytearray()
    factory.opened = []
    factory.close = None
    factory.on_open = defer.Deferred()
    connectWS(factory)
    return factory


def grant(service, guest, **body):
    status, response = api.grant(service.api_url, service.key, guest.name, "serial", **body)
    if status != 200:
        raise RuntimeError(f"grant failed: {status} {response}")
    return response["href"]


def between(data, start, end):
    i = data.find(start + b"\r\n")
    j = data.find(end + b"\r\n", i)
    if i < 0 or j < 0:
        return None
    return data[i:j]


@defer.inlineCallbacks
def run_phase(reactor, service, guest, label, viewers, lines):
    clients, writer = [], None
    if viewers:
        writer = connect(grant(service, guest))
        yield writer.on_open
        clients.append(writer)
        for _ in range(viewers - 1):
            clients.append(connect(grant(service, guest, read_only=True)))
        yield defer.gatherResults([c.on_open for c in clients])
        yield task.deferLater(reactor, 1.0, lambda: None)  # scrollback delivered, quiet
    log_before = yield deferToThread(api.call, f"{service.api_url}/v1/instances/{guest.uuid}"
                                     f"/console_log", key=service.key)
    mark = len(log_before[1])
    ref_mark = guest.serial_offset()
    # Only what arrives from now on counts (the scrollback may hold an earlier run's markers).
    marks = [len(client.received) for client in clients]
    command = f"echo FANOUT-BEGIN-$((1+1)); seq 1 {lines}; echo FANOUT-END-$((1+1))\r".encode()
    cpu0, t0 = cpu_seconds(service.process.pid), time.monotonic()
    main0 = reactor_cpu_seconds(service.process.pid)
    if writer is not None:
        writer.opened[0].sendMessage(command, isBinary=True)
    else:
        yield deferToThread(guest.type_serial, command)
    # Watch libvirt's own log of the serial port (not the service: polling it would cost the
    # service CPU and skew the measurement).
    while END + b"\r\n" not in guest.serial_output(ref_mark):
        yield task.deferLater(reactor, 0.05, lambda: None)
    wall, cpu = time.monotonic() - t0, cpu_seconds(service.process.pid) - cpu0
    main = reactor_cpu_seconds(service.process.pid) - main0
    yield task.deferLater(reactor, 1.0, lambda: None)  # let the last frames arrive
    status, log = yield deferToThread(api.call, f"{service.api_url}/v1/instances/{guest.uuid}"
                                      f"/console_log", key=service.key)
    expected = between(log[mark:], BEGIN, END) or b""
    reference = between(guest.serial_output(ref_mark), BEGIN, END)
    lost = mismatched = disconnects = 0
    for client, start in zip(clients, marks):
        got = between(bytes(client.received[start:]), BEGIN, END) or b""
        lost += max(0, len(expected) - len(got))
        mismatched += got != expected
        disconnects += client.close is not None
    for client in clients:
        for protocol in client.opened:
            protocol.sendClose()
    yield task.deferLater(reactor, 0.5, lambda: None)
    return dict(label=label, viewers=viewers, bytes=len(expected), wall=wall, cpu=cpu, main=main,
                lost=lost, mismatched=mismatched, disconnects=disconnects,
                log_matches_reference=expected == reference)


@defer.inlineCallbacks
def main(reactor, args):
    tb = _testbed.ensure_testbed()
    name = f"cp-bench-serial-{os.getpid()}"
    guest = tb.make_guest(name, vnc_password=None, start=False)
    work = Path(tempfile.mkdtemp(prefix="consoleproxy-bench-"))
    service = ServiceProcess(work, serial__domains=name, serial__max_viewers=args.viewers + 1,
                             serial__source=args.source)
    results = []
    try:
        yield deferToThread(service.start)
        yield deferToThread(guest.start, True)
        yield task.deferLater(reactor, 2.0, lambda: None)
        for label, viewers in (("capture only", 0), ("1 viewer", 1),
                               (f"{args.viewers} viewers", args.viewers + 1)):
            result = yield run_phase(reactor, service, guest, label, viewers, args.lines)
            results.append(result)
            print(f"  {label}: done in {result['wall']:.1f} s", flush=True)
    finally:
        yield deferToThread(service.stop)
        tb.remove_guest(name)
    print()
    print(f"serial fan-out, source = {args.source}: guest prints `seq 1 {args.lines}`; CPU = "
          f"service process (utime+stime) during the run, react. = its reactor thread alone")
    print(f"{'run':<14} {'viewers':>7} {'bytes':>9} {'wall s':>7} {'KB/s':>7} {'CPU s':>6} "
          f"{'CPU %':>6} {'react.':>6} {'lost':>5} {'differ':>6} {'closed':>6} {'log=ref':>7}")
    for r in results:
        print(f"{r['label']:<14} {r['viewers']:>7} {r['bytes']:>9} {r['wall']:>7.1f} "
              f"{r['bytes'] / r['wall'] / 1024:>7.1f} {r['cpu']:>6.2f} "
              f"{100 * r['cpu'] / r['wall']:>5.1f}% {r['main']:>6.2f} {r['lost']:>5} "
              f"{r['mismatched']:>6} "
              f"{r['disconnects']:>6} {str(r['log_matches_reference']):>7}")
    if any(r["lost"] or r["mismatched"] or r["disconnects"] or not r["log_matches_reference"]
           for r in results):
        raise SystemExit(f"bytes were lost (service log and state kept in {work})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=100,
                        help="read-only viewers (plus 1 writer)")
    parser.add_argument("--lines", type=int, default=100_000, help="seq 1 LINES")
    parser.add_argument("--source", choices=("libvirt", "pty"), default="libvirt",
                        help="[serial] source of the service")
    task.react(main, [parser.parse_args()])
