"""
A headless X server (Xvfb, Debian's xvfb) for the native viewers' end-to-end tests, and its
screen read back from the framebuffer file Xvfb keeps (C{-fbdir}, XWD format).
"""

import os
import struct
import subprocess
import tempfile
from pathlib import Path

#: XWD file header: 25 big-endian 32-bit fields, then the window name (man xwd, XWDFile.h).
_HEADER = struct.Struct(">25I")


class Xvfb:
    """
    C{with Xvfb() as x:} runs C{Xvfb} on a free display (it picks one: C{-displayfd}); the
    children started with C{x.env} draw on it, and L{screen} reads what they drew.
    """

    def __init__(self, width=1024, height=768):
        self._size = f"{width}x{height}x24"
        self._dir = tempfile.TemporaryDirectory(prefix="cp-xvfb-")
        self.proc = None
        self.display = None

    def __enter__(self):
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", self._size, "-fbdir",
             self._dir.name, "-nolisten", "tcp", "-br"],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write)
        with os.fdopen(read) as f:
            number = f.readline().strip()
        if not number:
            raise RuntimeError("Xvfb did not start")
        self.display = f":{number}"
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._dir.cleanup()

    @property
    def env(self):
        env = dict(os.environ, DISPLAY=self.display)
        env.pop("WAYLAND_DISPLAY", None)
        return env

    def screen(self):
        """
        @return: a PIL RGB image of the whole screen as it is now.
        """
        from PIL import Image

        data = (Path(self._dir.name) / "Xvfb_screen0").read_bytes()
        h = _HEADER.unpack_from(data)
        header_size, width, height = h[0], h[4], h[5]
        byte_order, bits_per_pixel, bytes_per_line, ncolors = h[7], h[11], h[12], h[19]
        if bits_per_pixel != 32:
            raise ValueError(f"unexpected XWD depth {bits_per_pixel}")
        start = header_size + ncolors * 12
        pixels = data[start:start + bytes_per_line * height]
        raw = "BGRX" if byte_order == 0 else "XRGB"  # LSBFirst: B, G, R, pad in memory
        return Image.frombuffer("RGB", (width, height), pixels, "raw", raw, bytes_per_line, 1)
