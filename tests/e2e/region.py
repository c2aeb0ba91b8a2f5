"""
A region on one machine, for tests/e2e/test_region_e2e.py: three nodes, each in its own network
namespace with its own address, its own QEMU guest (KVM when available, else TCG; VNC on the
namespace's loopback, serial on a PTY) and its own consoleproxy (bench.service: the real
service, whose FakeHypervisor describes that node's guest); HAProxy in front on a fourth
address, with TLS, running etc/haproxy/region.cfg unchanged.

Addresses (B chosen free per test process): the front door 10.B.0.1 and two client addresses
10.B.0.2-3 on a dummy interface; node N is 10.B.N.2 in namespace cp-rg-PID-N, reached through a
veth whose host side is 10.B.N.1. Everything is removed by L{Region.close}, whatever happened.
"""

import contextlib
import datetime
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO / "etc" / "haproxy" / "region.cfg"
NODES = (1, 2, 3)
CONSOLE_PORT, XVPVNC_PORT, API_PORT = 6080, 6081, 6090


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _free_block():
    used = _ip("-4", "addr").stdout + _ip("-4", "route").stdout
    for b in [100 + (os.getpid() + i) % 100 for i in range(100)]:
        if f"10.{b}." not in used:
            return b
    raise RuntimeError("no free 10.B.0.0/16 block for the region test")


def self_signed_cert(path, address):
    """A certificate (and key) for the front door's address, in HAProxy's one-file PEM form."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "consoleproxy region test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem + key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    return pem


class Node:
    def __init__(self, region, n):
        self.n = n
        self.name = f"node{n}"
        self.netns = f"cp-rg-{os.getpid()}-{n}"
        self.address = f"10.{region.block}.{n}.2"
        self.host_side = f"10.{region.block}.{n}.1"
        self.workdir = region.workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_url = f"http://{self.address}:{API_PORT}"
        self.qemu = self.service = None
        self.info = None

    def exec_prefix(self):
        return ["ip", "netns", "exec", self.netns]

    def start_guest(self, images):
        """This node's guest, inside the namespace: VNC on its loopback, serial on a PTY."""
        accel = ["-accel", "kvm", "-cpu", "host"] if os.access("/dev/kvm", os.W_OK) else \
            ["-accel", "tcg"]
        stderr = self.workdir / "qemu.stderr"
        self.qemu = subprocess.Popen(
            self.exec_prefix() + [
                "qemu-system-x86_64", "-name", f"region-{self.name}", *accel, "-m", "128",
                "-machine", "pc", "-nodefaults", "-no-user-config", "-display", "none",
                "-vga", "std", "-vnc", "127.0.0.1:0",
                "-chardev", "pty,id=ser0", "-serial", "chardev:ser0",
                "-kernel", str(images / "vmlinuz"), "-initrd", str(images / "initrd.gz"),
                "-append", f"console=tty0 console=ttyS0 panic=5 testbed.name={self.name}",
                "-no-reboot"],
            stdout=subprocess.DEVNULL, stderr=open(stderr, "wb"), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"char device redirected to (/dev/pts/\d+) \(label ser0\)",
                              stderr.read_text(errors="replace"))
            if found:
                return found.group(1)
            if self.qemu.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"QEMU of {self.name} did not start: {stderr.read_text()}")

    def start_service(self, pty, settings):
        """The real service (bench.service: FakeHypervisor describing this node's guest)."""
        command = self.exec_prefix() + [
            sys.executable, "-m", "bench.service", "--vnc", "127.0.0.1:5900",
            "--workdir", str(self.workdir), "--serial-pty", pty]
        for key, value in settings.items():
            command += ["--set", f"{key}={value}"]
        self._stderr = open(self.workdir / "service.stderr", "ab")
        self.service = subprocess.Popen(
            command, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL)
        line = self.service.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited: "
                               + (self.workdir / "service.stderr").read_text(errors="replace"))
        self.info = json.loads(line)
        self.key = self.info["key"]
        self.vnc_instance = self.info["instance"]
        self.serial_instance = self.info["serial_instances"][0]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.api_url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /healthz")

    def log(self):
        path = self.workdir / "service.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, sig=signal.SIGKILL):
        if self.service is not None and self.service.poll() is None:
            self.service.send_signal(sig)
            self.service.wait(20)

    def close(self):
        for process in (self.service, self.qemu):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.service is not None:
            self.service.stdout.close()
            self._stderr.close()


class Region:
    """
    @param settings: node settings (SECTION.KEY -> value) applied to every node, besides those
        that make it a region node (listeners, public_url, node_id, xvpvnc public_port).
    """

    def __init__(self, workdir, images, settings=None):
        self.workdir = Path(workdir)
        self.block = _free_block()
        self.front = f"10.{self.block}.0.1"
        self.clients = (f"10.{self.block}.0.2", f"10.{self.block}.0.3")
        self.dummy = f"cprg{os.getpid() % 10**8}"
        self.nodes = [Node(self, n) for n in NODES]
        self.haproxy = None
        self._images = images
        self._settings = settings or {}

    @property
    def base(self):
        return f"https://{self.front}"

    def node(self, n):
        return self.nodes[n - 1]

    def start(self):
        _ip("link", "add", self.dummy, "type", "dummy")
        for address in (self.front, *self.clients):
            _ip("addr", "add", f"{address}/32", "dev", self.dummy)
        _ip("link", "set", self.dummy, "up")
        for node in self.nodes:
            veth = f"{self.dummy}v{node.n}"
            _ip("netns", "add", node.netns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns",
                node.netns)
            _ip("addr", "add", f"{node.host_side}/24", "dev", veth)
            _ip("link", "set", veth, "up")
            _ip("-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            _ip("-n", node.netns, "link", "set", "eth0", "up")
            _ip("-n", node.netns, "link", "set", "lo", "up")
            _ip("-n", node.netns, "route", "add", "default", "via", node.host_side)
        ptys = [node.start_guest(self._images) for node in self.nodes]
        for node, pty in zip(self.nodes, ptys):
            node.start_service(pty, self.node_settings(node))
        self.cert_pem = self_signed_cert(self.workdir / "front.pem", self.front)
        (self.workdir / "ca.pem").write_bytes(self.cert_pem)
        self.start_haproxy()
        return self

    def node_settings(self, node):
        a = node.address
        settings = {
            "listen.api": f"tcp:{API_PORT}:interface={a}",
            "listen.console": f"haproxy:tcp:{CONSOLE_PORT}:interface={a}",
            "listen.xvpvnc": f"haproxy:tcp:{XVPVNC_PORT}:interface={a}",
            "console.public_url": f"{self.base}/n/{node.name}",
            "console.prefix": "kept" if node.n == 3 else "stripped",
            "xvpvnc.public_port": str(5900 + node.n),
            "tokens.node_id": node.name,
        }
        settings.update(self._settings)
        return settings

    def haproxy_env(self):
        env = dict(os.environ, CP_FRONT_ADDR=self.front, CP_FRONT_CERT=str(self.workdir / "front.pem"),
                   CP_RUN_DIR=str(self.workdir))
        for node in self.nodes:
            env[f"CP_NODE{node.n}"] = node.address
        return env

    def start_haproxy(self):
        log = open(self.workdir / "haproxy.log", "ab")
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(HAPROXY_CFG)],
                                        env=self.haproxy_env(), stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.haproxy.poll() is not None:
                raise RuntimeError("haproxy exited: " + (self.workdir / "haproxy.log").read_text())
            if all(state == "UP" for state in self.server_states().values()):
                return
            time.sleep(0.2)
        raise RuntimeError(f"haproxy servers not up: {self.server_states()}")

    def admin(self, command):
        """One command on HAProxy's admin socket (what an operator runs with socat)."""
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.workdir / "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def server_states(self):
        """(backend, server) -> status (UP, DOWN, MAINT, DRAIN...) from HAProxy's stats."""
        with contextlib.suppress(OSError):
            lines = self.admin("show stat").splitlines()
            header = lines[0].lstrip("# ").split(",")
            states = {}
            for line in lines[1:]:
                row = dict(zip(header, line.split(",")))
                if row.get("svname") not in (None, "", "FRONTEND", "BACKEND"):
                    states[(row["pxname"], row["svname"])] = row["status"]
            return states
        return {"haproxy": "no admin socket yet"}

    def close(self):
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait(10)
        for node in self.nodes:
            node.close()
        for node in self.nodes:
            _ip("netns", "del", node.netns, check=False)
        _ip("link", "del", self.dummy, check=False)
