"""
A QEMU run directly (no libvirt) only for its VNC server: no disk and no guest OS (the
screen shows SeaBIOS), optionally with TLS (VeNCrypt) and a VNC password passed as a secret
object, so it never shows in the process list.

Used by the VeNCrypt e2e tests, which must not change the shared libvirtd's configuration.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def qemu_binary():
    """
    @return: the QEMU binary to run, or C{None} when there is none.
    """
    path = os.environ.get("CONSOLEPROXY_E2E_QEMU") or shutil.which("qemu-system-x86_64") \
        or "/usr/bin/qemu-system-x86_64"
    return path if os.access(path, os.X_OK) else None


def _free_vnc_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 5900:
            return port


class QemuVnc:
    """
    @param workdir: a directory for the TLS credentials, the password file and the log.
    @param tls: C{None}, C{"x509"} (then C{pki_dir} holds ca-cert.pem, server-cert.pem,
        server-key.pem) or C{"anonymous"} (C{tls-creds-anon}).
    @param verify_peer: QEMU requires a client certificate signed by its CA.
    @param password: the VNC password, or C{None} for none.
    @ivar port: the VNC server's TCP port on 127.0.0.1.
    """

    def __init__(self, workdir, tls=None, pki_dir=None, verify_peer=False, password=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_vnc_port()
        self.password = password
        args = [qemu_binary(), "-machine", "pc", "-accel", "tcg", "-m", "32", "-nodefaults",
                "-vga", "std", "-display", "none", "-no-user-config"]
        vnc = f"127.0.0.1:{self.port - 5900}"
        if password is not None:
            secret = self.workdir / "vnc-password"
            secret.write_text(password)
            secret.chmod(0o600)
            args += ["-object", f"secret,id=vncpw,file={secret}"]
            vnc += ",password-secret=vncpw"
        if tls == "x509":
            args += ["-object", f"tls-creds-x509,id=tls0,dir={pki_dir},endpoint=server,"
                                f"verify-peer={'on' if verify_peer else 'off'}"]
            vnc += ",tls-creds=tls0"
        elif tls == "anonymous":
            where = f"dir={pki_dir}," if pki_dir else ""
            args += ["-object", f"tls-creds-anon,id=tls0,{where}endpoint=server"]
            vnc += ",tls-creds=tls0"
        args += ["-vnc", vnc]
        self.args = args
        self.process = None
        self.log_path = self.workdir / "qemu.log"

    def start(self, timeout=20):
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"QEMU exited with {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(12).startswith(b"RFB "):
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"QEMU's VNC server did not answer within {timeout}s: {self.log()}")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
