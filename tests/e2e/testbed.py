"""Real libvirt + QEMU guests for the end-to-end tests.

The host side (packages, guest kernel + initramfs, libvirtd/virtlogd) is set up by
``tools/testbed.sh``; this module defines and drives the guests. It is also the only place
where the domain XML is written: ``tools/testbed.sh guest NAME`` runs this file as a script.

Guests are tiny TCG VMs: Debian's cloud kernel, a busybox initramfs with a root shell on the
serial port (ttyS0) and on the VGA screen (tty1), VNC on 127.0.0.1, ~5 s to the prompt
``[NAME /]# ``. Every domain is tagged ``<description>consoleproxy-testbed</description>``;
nothing untagged is ever modified.

    tb = ensure_testbed()                       # runs tools/testbed.sh images daemons once
    g = tb.make_guest("cp-e2e-x", vnc_password="secret1")
    g.vnc_port, g.serial_log, g.serial_pty
    g.wait_for_serial(b"hello", timeout=10)
    g.destroy(); g.start(); g.undefine()

Command line (used by tools/testbed.sh)::

    python tests/e2e/testbed.py guest NAME [--vnc-password PW | --no-vnc-password] [--mem MiB]
    python tests/e2e/testbed.py info NAME
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import libvirt

TAG = "consoleproxy-testbed"
DEFAULT_URI = "qemu:///system"
DEFAULT_DIR = "/var/tmp/consoleproxy-testbed"
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "testbed.sh"

#: libvirt refuses longer VNC passwords at define time (RFB VNC auth uses 8 bytes).
VNC_PASSWORD_MAX = 8
#: Below ~72 MiB Debian's cloud kernel reset-loops silently right after SeaBIOS.
MIN_MEM_MIB = 72
#: Printed once per boot on the serial console by the initramfs, before the shell starts.
READY_MARKER = b"CONSOLEPROXY-TESTBED-READY"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def testbed_dir() -> Path:
    return Path(os.environ.get("CONSOLEPROXY_TESTBED") or DEFAULT_DIR)


@contextlib.contextmanager
def _connection(uri: str):
    # A short-lived connection per operation: nothing stays open in the test process, so
    # whatever event loop the code under test registers with libvirt later is unaffected.
    conn = libvirt.open(uri)
    try:
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _is_ours(dom: libvirt.virDomain) -> bool:
    # from the XML, not dom.metadata(): that prints "metadata not found" for untagged domains
    try:
        return ElementTree.fromstring(dom.XMLDesc(0)).findtext("description") == TAG
    except libvirt.libvirtError:
        return False


def _lookup(conn, name: str) -> libvirt.virDomain | None:
    # not lookupByName(): libvirt's default error handler prints "Domain not found" on stderr
    for dom in conn.listAllDomains():
        if dom.name() == name:
            return dom
    return None


class Testbed:
    """The libvirt host: connection URI, guest images and serial log directory."""

    def __init__(self, uri: str = DEFAULT_URI, directory: str | os.PathLike | None = None):
        self.uri = uri
        self.directory = Path(directory) if directory else testbed_dir()
        self.images_dir = self.directory / "images"
        self.log_dir = self.directory / "logs"

    def __repr__(self):
        return f"Testbed(uri={self.uri!r}, directory={str(self.directory)!r})"

    def connection(self):
        """Context manager yielding a fresh ``libvirt.virConnect`` (closed afterwards)."""
        return _connection(self.uri)

    # -- XML: the one definition of a testbed guest --------------------------------------
    def domain_xml(self, name: str, vnc_password: str | None = "secret1", mem_mib: int = 128) -> str:
        if not _NAME_RE.match(name):
            raise ValueError(f"bad guest name {name!r}")
        if vnc_password is not None and not 0 < len(vnc_password) <= VNC_PASSWORD_MAX:
            raise ValueError(f"VNC password must be 1..{VNC_PASSWORD_MAX} characters (libvirt refuses longer)")
        if mem_mib < MIN_MEM_MIB:
            raise ValueError(f"mem_mib must be >= {MIN_MEM_MIB} (the guest kernel reset-loops below)")
        passwd = "" if vnc_password is None else f" passwd={quoteattr(vnc_password)}"
        img, log = self.images_dir, self.log_dir / f"{name}-serial.log"
        return f"""<domain type='qemu'>
  <name>{name}</name>
  <description>{TAG}</description>
  <memory unit='MiB'>{int(mem_mib)}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(img / "vmlinuz"))}</kernel>
    <initrd>{escape(str(img / "initrd.gz"))}</initrd>
    <cmdline>console=tty0 console=ttyS0 panic=5 testbed.name={name}</cmdline>
  </os>
  <features>
    <acpi/>
    <tcg><tb-cache unit='MiB'>32</tb-cache></tcg>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='pty'>
      <log file={quoteattr(str(log))} append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'{passwd}/>
    <video><model type='vga'/></video>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <panic model='isa'/>
  </devices>
</domain>
"""

    # -- guests ------------------------------------------------------------------------
    def make_guest(self, name: str, vnc_password: str | None = "secret1", mem_mib: int = 128,
                   timeout: float = 120, start: bool = True) -> "Guest":
        """Define and start guest NAME, wait for its shell prompt on the serial console.

        An existing guest of ours with that name is reused when it runs with the same
        password and memory, and replaced otherwise. A domain that is not ours: RuntimeError.
        With start=False the guest is only defined (stopped); call guest.start() later.
        A guest that does not come up is destroyed and undefined before the error propagates.
        """
        xml = self.domain_xml(name, vnc_password, mem_mib)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for f in ("vmlinuz", "initrd.gz"):
            if not (self.images_dir / f).is_file():
                raise RuntimeError(f"{self.images_dir / f} missing: run tools/testbed.sh images")
        with self.connection() as conn:
            dom = _lookup(conn, name)
            if dom is not None:
                if not _is_ours(dom):
                    raise RuntimeError(f"domain {name} exists and is not tagged {TAG}; not touching it")
                if start and dom.isActive() and _params(dom) == (vnc_password, mem_mib):
                    guest = Guest(self, name, vnc_password)
                    guest.refresh()
                    guest.wait_for_serial(guest.prompt, timeout)
                    return guest
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            conn.defineXML(xml)
        guest = Guest(self, name, vnc_password)
        try:
            if start:
                guest.start(timeout=timeout)
            else:
                guest.refresh()
        except BaseException:
            self.remove_guest(name)  # never leave a half-made guest behind
            raise
        return guest

    def guest(self, name: str) -> "Guest":
        """An existing guest of ours (running or not)."""
        with self.connection() as conn:
            dom = _lookup(conn, name)
            if dom is None or not _is_ours(dom):
                raise LookupError(f"no {TAG} guest named {name}")
            pw, _ = _params(dom)
        guest = Guest(self, name, pw)
        guest.refresh()
        return guest

    def guest_names(self, prefix: str = "") -> list[str]:
        """Names of all our guests (defined or running) starting with prefix."""
        with self.connection() as conn:
            return sorted(d.name() for d in conn.listAllDomains()
                          if d.name().startswith(prefix) and _is_ours(d))

    def remove_guest(self, name: str) -> None:
        """Destroy and undefine guest NAME if it exists and is ours."""
        with self.connection() as conn:
            dom = _lookup(conn, name)
            if dom is None:
                return
            if not _is_ours(dom):
                raise RuntimeError(f"domain {name} is not tagged {TAG}; not touching it")
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):   # a concurrent remover got there first
                dom.undefine()


def _params(dom) -> tuple[str | None, int]:
    root = ElementTree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE))
    g = root.find("./devices/graphics[@type='vnc']")
    return (g.get("passwd") if g is not None else None), int(root.findtext("./memory")) // 1024


class Guest:
    """One testbed guest. ``vnc_port`` and ``serial_pty`` change on every start (refreshed)."""

    vnc_host = "127.0.0.1"

    def __init__(self, testbed: Testbed, name: str, vnc_password: str | None):
        self.testbed = testbed
        self.name = name
        self.vnc_password = vnc_password
        self.serial_log = testbed.log_dir / f"{name}-serial.log"
        self.prompt = f"[{name} /]# ".encode()
        self.uuid: str | None = None
        self.vnc_port: int | None = None
        self.serial_pty: str | None = None
        # Where this boot's output starts in serial_log: libvirt truncates the log on every
        # start (append='off'), so that is 0 after start(); see wait_for_serial().
        self._boot_offset = 0

    def __repr__(self):
        return f"<Guest {self.name} vnc={self.vnc_host}:{self.vnc_port} pty={self.serial_pty}>"

    def refresh(self) -> None:
        """Re-read UUID, VNC port and serial PTY from the live domain XML."""
        with self.testbed.connection() as conn:
            dom = conn.lookupByName(self.name)
            self.uuid = dom.UUIDString()
            root = ElementTree.fromstring(dom.XMLDesc(0))
        g = root.find("./devices/graphics[@type='vnc']")
        port = int(g.get("port", "-1")) if g is not None else -1
        self.vnc_port = port if port > 0 else None
        src = root.find("./devices/serial[@type='pty']/source")
        self.serial_pty = src.get("path") if src is not None else None

    def is_running(self) -> bool:
        with self.testbed.connection() as conn:
            return bool(conn.lookupByName(self.name).isActive())

    def start(self, wait: bool = True, timeout: float = 120) -> None:
        """Start the (stopped) guest; by default wait for its shell prompt on the serial console.

        The serial log is opened with append='off': virtlogd truncates it before QEMU runs, so
        after start() the log holds only this boot. To make sure wait_for_serial() can never see
        the previous boot's prompt, the old log is also emptied here before starting.
        """
        with self.testbed.connection() as conn:
            dom = conn.lookupByName(self.name)
            if dom.isActive():
                raise RuntimeError(f"{self.name} is already running")
            with contextlib.suppress(FileNotFoundError):
                os.truncate(self.serial_log, 0)
            self._boot_offset = 0
            dom.create()
        self.refresh()
        if wait:
            self.wait_for_serial(self.prompt, timeout)

    def destroy(self) -> None:
        """Hard power-off (virDomainDestroy); the domain stays defined, start() boots it again."""
        with self.testbed.connection() as conn:
            dom = conn.lookupByName(self.name)
            if dom.isActive():
                dom.destroy()
        self.vnc_port = self.serial_pty = None

    def undefine(self) -> None:
        """Destroy (if running) and undefine. The serial log file is kept for post-mortems."""
        self.testbed.remove_guest(self.name)
        self.vnc_port = self.serial_pty = None

    # -- serial console (read from the <log> file, which sees all output) ------------------
    def serial_offset(self) -> int:
        """Current end of the serial log; pass as ``since=`` to wait only for later output."""
        try:
            return self.serial_log.stat().st_size
        except FileNotFoundError:
            return 0

    def serial_output(self, since: int | None = None) -> bytes:
        """Serial output of the current boot (or from offset ``since``)."""
        start = self._boot_offset if since is None else since
        try:
            with open(self.serial_log, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < start:          # truncated under us: the guest was restarted elsewhere
                    start = 0
                f.seek(start)
                return f.read()
        except FileNotFoundError:
            return b""

    def wait_for_serial(self, text: bytes, timeout: float = 60, since: int | None = None) -> bytes:
        """Wait until ``text`` appears in the serial output of the current boot.

        With ``since`` (from serial_offset()), only output written after that point counts.
        Returns the output read (from the start offset up to now); raises TimeoutError
        with the tail of the log otherwise.
        """
        if isinstance(text, str):
            text = text.encode()
        deadline = time.monotonic() + timeout
        while True:
            out = self.serial_output(since)
            if text in out:
                return out
            if time.monotonic() >= deadline:
                tail = out[-800:].decode("utf-8", "replace")
                raise TimeoutError(f"{self.name}: {text!r} not on the serial console within {timeout}s "
                                   f"({self.serial_log}); last output:\n{tail}")
            time.sleep(0.1)

    def type_serial(self, data: bytes, expect: bytes | None = None, timeout: float = 10) -> bytes:
        """Type raw bytes into the guest's serial PTY (root only; end a command with b"\\r").

        The PTY is held open until ``expect`` shows up in the serial output written after the
        call (returned), or for 1.5 s without ``expect``: QEMU notices a PTY client only by
        polling about once a second, and bytes written by a client that closes at once are
        lost. Only writes, so it steals no output from a console reader; QEMU keeps no serial
        output for absent PTY readers (the log file has everything).
        """
        if not self.serial_pty:
            self.refresh()
        mark = self.serial_offset()
        fd = os.open(self.serial_pty, os.O_WRONLY | os.O_NOCTTY)
        try:
            os.write(fd, data)
            if expect is None:
                time.sleep(1.5)
                return b""
            return self.wait_for_serial(expect, timeout, since=mark)
        finally:
            os.close(fd)

    def info(self) -> dict[str, str]:
        return {
            "NAME": self.name, "UUID": self.uuid or "",
            "VNC_HOST": self.vnc_host, "VNC_PORT": str(self.vnc_port or ""),
            "VNC_PASSWORD": self.vnc_password or "",
            "SERIAL_PTY": self.serial_pty or "", "SERIAL_LOG": str(self.serial_log),
            "URI": self.testbed.uri,
        }


# -- host set-up -------------------------------------------------------------------------
_ensured: Testbed | None = None
_ensure_lock = threading.Lock()


def ensure_testbed(uri: str = DEFAULT_URI) -> Testbed:
    """Run ``tools/testbed.sh images daemons`` once per process; return the Testbed.

    Packages and the venv (``tools/testbed.sh deps``) are assumed to be in place.
    Raises RuntimeError with the script's output when it fails.
    """
    global _ensured
    with _ensure_lock:
        if _ensured is None:
            proc = subprocess.run(["bash", str(SCRIPT), "images", "daemons"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
            if proc.returncode:
                raise RuntimeError(f"{SCRIPT} images daemons failed (exit {proc.returncode}):\n"
                                   + proc.stdout.decode("utf-8", "replace"))
            _ensured = Testbed(uri)
        return _ensured


# -- command line (tools/testbed.sh guest ...) -------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="testbed.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("guest", help="define + start a guest, wait for its prompt, print info")
    g.add_argument("name")
    pw = g.add_mutually_exclusive_group()
    pw.add_argument("--vnc-password", default="secret1", metavar="PW")
    pw.add_argument("--no-vnc-password", action="store_true")
    g.add_argument("--mem", type=int, default=128, metavar="MiB")
    g.add_argument("--timeout", type=float, default=120)
    i = sub.add_parser("info", help="print info of a guest of ours")
    i.add_argument("name")
    a = p.parse_args(argv)

    tb = Testbed()
    try:
        if a.cmd == "guest":
            t0 = time.monotonic()
            guest = tb.make_guest(a.name, None if a.no_vnc_password else a.vnc_password, a.mem, a.timeout)
            print(f"[testbed] {guest.name}: shell prompt after {time.monotonic() - t0:.1f}s", file=sys.stderr)
        else:
            guest = tb.guest(a.name)
    except (ValueError, RuntimeError, LookupError, TimeoutError, libvirt.libvirtError) as e:
        print(f"[testbed] ERROR: {e}", file=sys.stderr)
        return 1
    for k, v in guest.info().items():
        print(f"{k}={shlex.quote(v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
