"""
The committed build of the web clients' browser libraries (vncproxy/web/static/vendor, made by
tools/webclients.sh) is the one the pins name, with its licences: every install path ships it
as is, so a change of the pins without a rebuild must fail here.
"""

import hashlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENDOR = REPO / "vncproxy" / "web" / "static" / "vendor"
PINS = REPO / "webclients"


def test_the_build_is_of_the_current_lock_file():
    lock = hashlib.sha256((PINS / "package-lock.json").read_bytes()).hexdigest()
    assert (VENDOR / ".lock-sha256").read_text().strip() == lock, "run tools/webclients.sh"


def test_each_library_is_the_pinned_version_with_its_licence():
    pins = json.loads((PINS / "package.json").read_text())["dependencies"]
    built = {}
    for versions in VENDOR.glob("*/VERSIONS"):
        for line in versions.read_text().splitlines():
            name, version, licence = line.split()
            built[name] = version
            assert licence in ("MIT", "MPL-2.0"), line  # what debian/copyright declares
    assert built == pins
    assert (VENDOR / "xterm" / "LICENSE.xterm").is_file()
    assert (VENDOR / "xterm" / "LICENSE.addon-fit").is_file()
    assert (VENDOR / "novnc" / "LICENSE.txt").is_file()


def test_what_the_pages_load_is_there():
    for path in ("xterm/xterm.mjs", "xterm/xterm.css", "xterm/addon-fit.mjs",
                 "novnc/core/rfb.js", "novnc/vendor/pako/lib/zlib/inflate.js"):
        assert (VENDOR / path).stat().st_size > 0, path
