"""
Headless Chromium for the web client tests: Debian's C{chromium} package driven by Playwright
for Python. Nothing is downloaded: Playwright launches the system's browser
(C{CONSOLEPROXY_CHROMIUM} overrides its path), with a fresh profile each launch.

L{watch} records what a person would see in the browser's developer console: console messages,
uncaught errors, Content-Security-Policy violations and failed requests.
"""

import base64
import os
import shutil
import struct
from dataclasses import dataclass, field

CHROMIUM = os.environ.get("CONSOLEPROXY_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
]

# Runs in every page before its own scripts: keeps each CSP violation the page suffers.
_RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
    window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


def unavailable_reason():
    """
    Why the browser tests cannot run here, or C{None}.
    """
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright; never 'playwright install')"
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)


# Chromium's advice to our own pixel reads (canvas_rgb), not something the page did.
_TEST_NOISE = ("willReadFrequently",)


@dataclass
class PageLog:
    console: list = field(default_factory=list)   # (type, text)
    errors: list = field(default_factory=list)    # uncaught exceptions
    failed: list = field(default_factory=list)    # (url, failure) of requests that failed
    statuses: list = field(default_factory=list)  # (url, status) of responses >= 400

    def problems(self, page=None, allow=()):
        """
        Every console error or warning, page error, failed request and CSP violation, less
        the messages containing one of the C{allow} substrings.
        """
        found = [f"console {kind}: {text}" for kind, text in self.console
                 if kind in ("error", "warning")]
        found += [f"page error: {e}" for e in self.errors]
        found += [f"request failed: {url} ({why})" for url, why in self.failed]
        found += [f"HTTP {status}: {url}" for url, status in self.statuses]
        if page is not None:
            found += [f"CSP violation: {v}" for v in page.evaluate("window.__cspViolations || []")]
        allow = (*allow, *_TEST_NOISE)
        return [p for p in found if not any(a in p for a in allow)]


def watch(page):
    """
    Start recording a page's console, errors and CSP violations (before it loads anything).
    """
    log = PageLog()
    page.add_init_script(_RECORD_VIOLATIONS)
    page.on("console", lambda m: log.console.append((m.type, m.text)))
    page.on("pageerror", lambda e: log.errors.append(str(e)))
    page.on("requestfailed", lambda r: log.failed.append((r.url, r.failure)))
    page.on("response", lambda r: r.status >= 400 and log.statuses.append((r.url, r.status)))
    return log


_CANVAS_PIXELS = """
(selector) => {
    const canvas = document.querySelector(selector);
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let binary = '';
    for (let i = 0; i < data.length; i += 0x8000) {
        binary += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
    }
    return [canvas.width, canvas.height, btoa(binary)];
}
"""


def canvas_rgb(page, selector="canvas"):
    """
    (width, height, RGB bytes) of a 2D canvas, read from the page itself (not a screenshot,
    so no scaling or compression stands between the pixels and the comparison).
    """
    width, height, data = page.evaluate(_CANVAS_PIXELS, selector)
    rgba = base64.b64decode(data)
    rgb = bytearray(width * height * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = rgba[0::4], rgba[1::4], rgba[2::4]
    return width, height, bytes(rgb)


def read_screendump(path):
    """
    (width, height, RGB bytes) of what C{virsh screenshot} wrote: a PNG (8-bit RGB or RGBA,
    not interlaced; what libvirt writes for QEMU) or a binary PPM (P6, older QEMU), decoded
    with the standard library only.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _read_png(data)
    if data.startswith(b"P6"):
        return _read_ppm(data)
    raise ValueError(f"{path}: neither PNG nor PPM")


def _read_png(data):
    import zlib

    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack("!I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack("!IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}")
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    out, prev = bytearray(), bytearray(stride)
    for row in range(height):
        kind, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    if bpp == 4:
        rgb = bytearray(width * height * 3)
        rgb[0::3], rgb[1::3], rgb[2::3] = out[0::4], out[1::4], out[2::4]
        out = rgb
    return width, height, bytes(out)


def _read_ppm(data):
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    width, height, maxval = int(fields[1]), int(fields[2]), int(fields[3])
    if maxval != 255:
        raise ValueError(f"PPM maxval {maxval}, not 255")
    pos += 1  # the single whitespace after maxval
    return width, height, data[pos:pos + width * height * 3]


def rgb_png(path, width, height, rgb):
    """
    Write RGB bytes as a PNG (for artifacts), with the standard library only.
    """
    import zlib

    def chunk(kind, body):
        return struct.pack("!I", len(body)) + kind + body + struct.pack("!I", zlib.crc32(kind + body))

    stride = width * 3
    raw = b"".join(b"\0" + rgb[r * stride:(r + 1) * stride] for r in range(height))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack("!IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw)))
        f.write(chunk(b"IEND", b""))


def differing_pixels(a, b):
    """
    The number of pixels that differ between two RGB buffers of the same size.
    """
    assert len(a) == len(b)
    return sum(1 for i in range(0, len(a), 3) if a[i:i + 3] != b[i:i + 3])


def lit_pixels(rgb):
    """
    The number of pixels that are not black.
    """
    return sum(1 for i in range(0, len(rgb), 3) if rgb[i:i + 3] != b"\0\0\0")


# True when a line of the terminal is (exact) or contains (not exact) the text.
_HAS_LINE = """([text, exact]) => { const b = window.consoleTerminal.buffer.active;
    for (let i = 0; i < b.length; i++) {
        const line = b.getLine(i).translateToString(true);
        if (exact ? line === text : line.includes(text)) return true;
    }
    return false; }"""


def wait_for_line(page, text, exact=False, timeout=5000):
    """Wait until the serial page's terminal shows a line that is (or contains) C{text}."""
    page.wait_for_function(_HAS_LINE, arg=[text, exact], timeout=timeout)
