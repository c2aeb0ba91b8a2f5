"""
Write a framebuffer (32 bpp, little-endian, red shift 16, as QEMU sends it) as a PNG, with the
standard library only, so tests can keep what the viewer saw as an artifact.
"""

import struct
import zlib


def _chunk(kind, data):
    return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))


def write_png(path, width, height, rects):
    """
    @param rects: ((x, y, w, h), pixel bytes) pairs in 32 bpp BGRX (QEMU's default format).
    """
    canvas = bytearray(width * height * 3)
    for (x, y, w, h), data in rects:
        for row in range(h):
            for col in range(w):
                i = (row * w + col) * 4
                o = ((y + row) * width + x + col) * 3
                canvas[o:o + 3] = bytes((data[i + 2], data[i + 1], data[i]))
    raw = b"".join(b"\0" + bytes(canvas[r * width * 3:(r + 1) * width * 3]) for r in range(height))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack("!IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(_chunk(b"IDAT", zlib.compress(raw)))
        f.write(_chunk(b"IEND", b""))
