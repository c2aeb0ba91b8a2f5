"""
Every pip install path of a clean clone gives a service whose web clients work: a checkout, the
sdist and the wheel built from it, each installed into a fresh virtual environment over Debian
12's own python3-* packages (--no-index: nothing is downloaded), then started with twistd from
another directory and asked for the serial page, noVNC's page and the files they load.

Run by tools/package-test (CONSOLEPROXY_INSTALL_TEST=1) with Debian's /usr/bin/python3; without
that variable nothing here is collected.
"""

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"



def _run(*argv, cwd=None):
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                                 "LANG": "C.UTF-8"})
    assert result.returncode == 0, (argv, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    src = tmp_path_factory.mktemp("clone") / "consoleproxy"
    _run("git", "clone", "-q", "--no-hardlinks", str(REPO), str(src))
    dist = src.parent / "dist"
    _run(PYTHON, "setup.py", "-q", "sdist", "-d", str(dist), cwd=src)
    _run(PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(dist), str(src))
    return {"checkout": src, "sdist": next(dist.glob("*.tar.gz")),
            "wheel": next(dist.glob("*.whl"))}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize("path", ["checkout", "sdist", "wheel"])
def test_the_installed_service_serves_the_serial_page_and_novnc(path, clone, tmp_path):
    venv = tmp_path / "venv"
    _run(PYTHON, "-m", "venv", "--system-site-packages", str(venv))
    _run(str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--no-build-isolation",
         str(clone[path]))
    where = _run(str(venv / "bin" / "python"), "-c", "import vncproxy; print(vncproxy.__file__)",
                 cwd=tmp_path)
    assert where.startswith(str(venv)), where  # the installed copy, not the clone

    api, console, xvpvnc = _free_port(), _free_port(), _free_port()
    log = open(tmp_path / "service.log", "wb")
    service = subprocess.Popen(
        [str(venv / "bin" / "python"), "-c", "from twisted.scripts.twistd import run; run()",
         "--nodaemon", "--pidfile=",
         "consoleproxy", "--set", f"listen.api=tcp:{api}:interface=127.0.0.1",
         "--set", f"listen.console=tcp:{console}:interface=127.0.0.1",
         "--set", f"listen.xvpvnc=tcp:{xvpvnc}:interface=127.0.0.1",
         "--set", f"service.state_dir={tmp_path / 'state'}",
         "--set", "libvirt.uri=test:///default", "--set", "serial.domains=",
         "--set", f"web.novnc_dir={tmp_path / 'no-system-novnc'}"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(f"http://127.0.0.1:{api}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert service.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "service.log").read_text()
            time.sleep(0.2)
        base = f"http://127.0.0.1:{console}"
        status, page = _get(f"{base}/serial.html")
        assert status == 200 and b"serial" in page
        for asset in ("/xterm/xterm.mjs", "/xterm/xterm.css", "/xterm/addon-fit.mjs",
                      "/serial/serial.js", "/vnc_lite.html", "/core/rfb.js",
                      "/vnc_auto.html", "/console/vnc.js", "/console/actions.js",
                      "/console/actions.css"):
            status, body = _get(base + asset)
            assert status == 200 and body, asset
    finally:
        service.terminate()
        service.wait(20)
        log.close()
