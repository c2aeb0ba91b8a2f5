"""
A region on one machine, for tests/e2e/test_region_e2e.py: three nodes, each with its own
address, its own QEMU guest (TCG, like the testbed's; VNC on the node's address, serial on
a PTY) and its own consoleproxy process (bench.service: the real service, whose FakeHypervisor
describes that node's guest); HAProxy in front on a fourth address, with TLS, running
etc/haproxy/region.cfg unchanged (only its environment names addresses and ports).

Addresses: 127.77.B.N for node N, 127.77.B.100 for the front door, 127.77.B.101-102 for two
clients (B from the test's pid): the loopback network, so nothing is configured and nothing
leaves the machine. (Network namespaces joined by veth pairs would give each node a network
stack of its own, but the kernels this suite runs on include no veth: loopback addresses give
each node its own address, which is what the front door, the PROXY protocol and the limits
see.) Ports are free ports picked at start. Everything is stopped by L{Region.close}.
"""

import contextlib
import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO / "etc" / "haproxy" / "region.cfg"
NODES = (1, 2, 3)


def free_port(address):
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


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
        self.address = f"127.77.{region.block}.{n}"
        self.workdir = region.workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_port, self.xvpvnc_port, self.native_port, self.api_port, self.vnc_port = (
            free_port(self.address) for _ in range(5))  # vnc_port: its guest's VNC server
        self.api_url = f"http://{self.address}:{self.api_port}"
        self.qemu = self.service = None
        self.info = None

    def start_guest(self, images):
        """This node's guest (the testbed's kernel and initramfs, as tests/e2e/testbed.py boots
        them under libvirt): VNC on the node's address, serial on a PTY."""
        accel = ["-accel", "tcg,tb-size=32"]  # as the testbed's guests (domain type qemu)
        stderr = self.workdir / "qemu.stderr"
        self.qemu = subprocess.Popen(
            ["qemu-system-x86_64", "-name", f"region-{self.name}", *accel, "-m", "128",
                "-machine", "pc", "-nodefaults", "-no-user-config", "-display", "none",
                "-vga", "std", "-vnc", f"{self.address}:{self.vnc_port - 5900}",
                "-chardev", "pty,id=ser0", "-serial", "chardev:ser0",
                "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
                "-kernel", str(images / "vmlinuz"), "-initrd", str(images / "initrd.gz"),
                # A guest that resets reboots in place (libvirt's on_reboot=restart, as the
                # testbed's): QEMU must outlive the node, or its PTY's name could be reused.
                "-append", f"console=tty0 console=ttyS0 panic=5 testbed.name={self.name}"],
            stdout=open(stderr, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
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
        command = [
            sys.executable, "-m", "bench.service", "--vnc", f"{self.address}:{self.vnc_port}",
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

    def screendump(self, path):
        """
        The guest's screen as QEMU itself reports it (QMP screendump, a PPM file at C{path}):
        the truth a viewer's picture is compared with.
        """
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.workdir / "qmp.sock"))
            reader = s.makefile("rb")
            reader.readline()  # the greeting
            for command in ({"execute": "qmp_capabilities"},
                            {"execute": "screendump", "arguments": {"filename": str(path)}}):
                s.sendall(json.dumps(command).encode() + b"\n")
                while True:  # skip asynchronous events until the command's answer
                    answer = json.loads(reader.readline())
                    if "return" in answer or "error" in answer:
                        break
                if "error" in answer:
                    raise RuntimeError(f"QMP {command['execute']}: {answer['error']}")
        return path

    def wait_for_serial(self, text, timeout=120):
        """Until the guest's serial output (as the node captured it) shows C{text}."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in (self.workdir / "state" / "serial").glob("*.log"):
                if text in path.read_bytes():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}'s guest did not print {text!r} within {timeout}s")

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
        that make it a region node (listeners, public_url and front ports, node_id).
    """

    def __init__(self, workdir, images, settings=None):
        self.workdir = Path(workdir)
        self.block = 1 + os.getpid() % 250
        self.front = f"127.77.{self.block}.100"
        self.clients = (f"127.77.{self.block}.101", f"127.77.{self.block}.102")
        self.front_port = free_port(self.front)
        self.nodes = [Node(self, n) for n in NODES]
        for node in self.nodes:  # its xvpvnc and native VNC ports on the front door
            node.front_xvpvnc_port, node.front_vnc_port = free_port(self.front), free_port(self.front)
        self.haproxy = None
        self._images = images
        self._settings = settings or {}

    @property
    def base(self):
        return f"https://{self.front}:{self.front_port}"

    def node(self, n):
        return self.nodes[n - 1]

    def start(self):
        ptys = [node.start_guest(self._images) for node in self.nodes]
        for node, pty in zip(self.nodes, ptys):
            node.start_service(pty, self.node_settings(node))
        for node in self.nodes:
            node.wait_for_serial(b"/]# ")
        self.cert_pem = self_signed_cert(self.workdir / "front.pem", self.front)
        (self.workdir / "ca.pem").write_bytes(self.cert_pem)
        self.start_haproxy()
        return self

    def node_settings(self, node):
        a = node.address
        settings = {
            "listen.api": f"tcp:{node.api_port}:interface={a}",
            "listen.console": f"tcp:{node.console_port}:interface={a}",
            "listen.xvpvnc": f"tcp:{node.xvpvnc_port}:interface={a}",
            "listen.vnc": f"tcp:{node.native_port}:interface={a}",
            # HAProxy reaches the nodes from 127.0.0.1 (the loopback source for 127/8): trusted
            # to state the client, with the PROXY protocol on the three public listeners
            "proxy.trusted": "127.0.0.1",
            "proxy.proxy_protocol": "console, xvpvnc, vnc",
            "console.public_url": f"{self.base}/n/{node.name}",
            "console.prefix": "kept" if node.n == 3 else "stripped",
            "console.public_xvpvnc_port": str(node.front_xvpvnc_port),
            "console.public_vnc_port": str(node.front_vnc_port),
            "tokens.node_id": node.name,
        }
        settings.update(self._settings)
        return settings

    def haproxy_env(self):
        env = dict(os.environ, CP_FRONT_ADDR=self.front, CP_FRONT_PORT=str(self.front_port),
                   CP_FRONT_CERT=str(self.workdir / "front.pem"), CP_RUN_DIR=str(self.workdir))
        for node in self.nodes:
            env[f"CP_NODE{node.n}"] = node.address
            env[f"CP_NODE{node.n}_CONSOLE_PORT"] = str(node.console_port)
            env[f"CP_NODE{node.n}_XVPVNC_PORT"] = str(node.xvpvnc_port)
            env[f"CP_NODE{node.n}_API_PORT"] = str(node.api_port)
            env[f"CP_NODE{node.n}_VNC_PORT"] = str(node.native_port)
            env[f"CP_NODE{node.n}_FRONT_XVPVNC_PORT"] = str(node.front_xvpvnc_port)
            env[f"CP_NODE{node.n}_FRONT_VNC_PORT"] = str(node.front_vnc_port)
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
