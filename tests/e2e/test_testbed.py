"""The testbed itself: a real QEMU guest with a serial shell and a reachable VNC server."""

import os
import socket
import struct

from testbed import READY_MARKER


def _recv_exactly(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"server closed the connection after {buf!r}")
        buf += chunk
    return buf


def _rfb_security_types(port):
    """Connect, exchange ProtocolVersion 3.8, return (server version, security types bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        version = _recv_exactly(s, 12)
        s.sendall(b"RFB 003.008\n")
        n = _recv_exactly(s, 1)
        return version, n + _recv_exactly(s, n[0])


def _vnc_des_response(password: str, challenge: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # cryptography < 43
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
    # VNC auth: DES with the password (8 bytes, NUL-padded) as key, each key byte bit-reversed
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in (password.encode() + b"\0" * 8)[:8])
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(challenge) + enc.finalize()


def test_serial_log_shows_shell_prompt(vnc_guest):
    out = vnc_guest.wait_for_serial(vnc_guest.prompt, timeout=10)
    assert READY_MARKER + b" name=" + vnc_guest.name.encode() in out
    assert vnc_guest.uuid and vnc_guest.serial_pty and vnc_guest.serial_pty.startswith("/dev/pts/")


def test_vnc_port_speaks_rfb_with_vnc_auth(vnc_guest):
    assert vnc_guest.vnc_port and vnc_guest.vnc_port >= 5900
    version, types = _rfb_security_types(vnc_guest.vnc_port)
    assert version == b"RFB 003.008\n"
    assert types == b"\x01\x02"  # one security type: 2 (VNC authentication)


def test_vnc_password_is_the_guests(vnc_guest):
    with socket.create_connection(("127.0.0.1", vnc_guest.vnc_port), timeout=10) as s:
        s.settimeout(10)
        assert _recv_exactly(s, 12) == b"RFB 003.008\n"
        s.sendall(b"RFB 003.008\n")
        assert _recv_exactly(s, 2) == b"\x01\x02"
        s.sendall(b"\x02")
        s.sendall(_vnc_des_response(vnc_guest.vnc_password, _recv_exactly(s, 16)))
        assert _recv_exactly(s, 4) == b"\0\0\0\0"  # SecurityResult OK
        s.sendall(b"\x01")  # ClientInit shared=1 (never kick other clients)
        init = _recv_exactly(s, 24)
        name = _recv_exactly(s, struct.unpack(">I", init[20:24])[0])
    width, height = struct.unpack(">HH", init[:4])
    assert width > 0 and height > 0
    assert name == f"QEMU ({vnc_guest.name})".encode()


def test_guest_restart_without_vnc_password(testbed):
    guest = testbed.make_guest(f"cp-e2e-restart-{os.getpid()}", vnc_password=None, mem_mib=96)
    try:
        assert guest.vnc_password is None
        assert _rfb_security_types(guest.vnc_port)[1] == b"\x01\x01"  # one type: 1 (None)

        guest.type_serial(b"echo before-$((6*7))\r", expect=b"before-42")

        guest.destroy()
        assert not guest.is_running()
        guest.start()  # waits for the prompt of the new boot
        assert guest.is_running() and guest.vnc_port
        out = guest.serial_output()
        assert out.count(READY_MARKER) == 1 and b"before-42" not in out
    finally:
        guest.undefine()
