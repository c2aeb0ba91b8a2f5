"""
The web clients on the console listener of an in-process service (real sockets), with a
stand-in noVNC and xterm.js directory: which files are served, with which headers.
"""

import json
import re
import urllib.error
import urllib.request

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from tests.integration.conftest import API_KEY, free_port
from vncproxy import config
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.service import ConsoleProxyService
from vncproxy.web import clients

LITE = ("<!DOCTYPE html><html><head><style>body { color: red; }</style>"
        "<script type=\"module\">alert(1)</script></head><body></body></html>")
UI = '<!DOCTYPE html><html><head><script type="module" src="app/ui.js"></script></head></html>'


@pytest.fixture
def novnc(tmp_path):
    root = tmp_path / "novnc"
    (root / "core").mkdir(parents=True)
    (root / "app" / "styles").mkdir(parents=True)
    (root / "utils").mkdir()
    (root / "vnc_lite.html").write_text(LITE)
    (root / "vnc.html").write_text(UI)
    (root / "core" / "rfb.js").write_text("export default class RFB {}\n")
    (root / "app" / "ui.js").write_text("import RFB from '../core/rfb.js';\n")
    (root / "app" / "styles" / "base.css").write_text("body {}\n")
    (root / "utils" / "novnc_proxy").write_text("#!/bin/sh\n")
    (root / "package.json").write_text('{"version": "9.9.9"}')
    return root


@pytest.fixture
def xterm(tmp_path):
    root = tmp_path / "xterm"
    root.mkdir()
    (root / "xterm.mjs").write_text("export class Terminal {}\n")
    (root / "xterm.css").write_text(".xterm {}\n")
    (root / "addon-fit.mjs").write_text("export class FitAddon {}\n")
    return root


def start(novnc_dir, xterm_dir, **settings):
    console_port = free_port()
    cfg = config.defaults(
        api_listen=f"tcp:{free_port()}:interface=127.0.0.1",
        console_listen=f"tcp:{console_port}:interface=127.0.0.1",
        novnc_dir=str(novnc_dir), xterm_dir=str(xterm_dir), **settings)
    service = ConsoleProxyService(cfg, reactor, FakeHypervisor(), [API_KEY])
    service.startService()
    return service, f"http://127.0.0.1:{console_port}"


@pytest.fixture
def web(novnc, xterm):
    service, base = start(novnc, xterm)
    yield base
    pytest_twisted.blockon(service.stopService())


def fetch(url, method="GET"):
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get(url, method="GET"):
    return threads.deferToThread(fetch, url, method)


@pytest_twisted.inlineCallbacks
def test_vnc_lite_is_novncs_own_with_its_inline_code_allowed_by_hash(web, novnc):
    """/vnc_lite.html serves noVNC's own page unchanged, its CSP naming the hashes of its inline code."""
    status, headers, body = yield get(f"{web}/vnc_lite.html?path=websockify%3Ftoken%3DT")
    assert status == 200
    assert body == LITE.encode()
    assert headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    assert "script-src 'self' 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='" in csp
    assert "connect-src 'self'" in csp


@pytest_twisted.inlineCallbacks
def test_vnc_auto_is_our_page_with_the_actions_menu_and_no_inline_code(web, novnc):
    """/vnc_auto.html (the URL the token API hands out) is our page on the served noVNC's
    library, whatever noVNC's own pages are: its script, style and menu are files of ours, so
    its CSP allows scripts and styles from the origin only."""
    status, headers, body = yield get(f"{web}/vnc_auto.html?path=websockify%3Ftoken%3DT")
    assert status == 200 and body == clients.OWN_LITE_PAGE.read_bytes()
    csp = headers["content-security-policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "connect-src 'self'" in csp and "sha256-" not in csp
    for path, needle in (("/console/vnc.js", b"from '../core/rfb.js'"),
                         ("/console/actions.js", b"console_actions"),
                         ("/console/actions.css", b"#actions")):
        status, _, script = yield get(web + path)
        assert status == 200 and needle in script, path


@pytest_twisted.inlineCallbacks
def test_every_response_carries_the_security_headers(web):
    """Pages, files, errors and refusals all say no-referrer, nosniff, no framing, and have a CSP."""
    for path in ("/vnc.html", "/vnc_auto.html?path=x", "/core/rfb.js", "/serial.html?token=T",
                 "/nope", "/websockify?token=T", "/"):
        status, headers, _ = yield get(web + path)
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "default-src 'none'" in headers["content-security-policy"], path


@pytest_twisted.inlineCallbacks
def test_token_carrying_responses_are_never_stored(web):
    """Pages and anything with a query string get no-store; plain files may be kept but revalidated."""
    for path in ("/vnc.html", "/vnc_lite.html", "/vnc_auto.html?path=websockify%3Ftoken%3DT",
                 "/serial.html?token=T", "/core/rfb.js?token=T", "/nope", "/websockify?token=T"):
        _, headers, _ = yield get(web + path)
        assert headers["cache-control"] == "no-store", path
    for path in ("/core/rfb.js", "/app/styles/base.css", "/xterm/xterm.mjs", "/serial/serial.js"):
        status, headers, _ = yield get(web + path)
        assert status == 200, path
        assert headers["cache-control"] == "no-cache", path


@pytest_twisted.inlineCallbacks
def test_files_have_their_content_types(web):
    """ES modules are JavaScript (browsers refuse modules of any other type), styles CSS."""
    expected = {"/core/rfb.js": "text/javascript; charset=utf-8",
                "/xterm/xterm.mjs": "text/javascript; charset=utf-8",
                "/xterm/xterm.css": "text/css; charset=utf-8",
                "/serial/serial.css": "text/css; charset=utf-8",
                "/console/vnc.js": "text/javascript; charset=utf-8",
                "/package.json": "application/json"}
    for path, content_type in expected.items():
        status, headers, _ = yield get(web + path)
        assert (status, headers["content-type"]) == (200, content_type), path


@pytest_twisted.inlineCallbacks
def test_only_the_client_files_are_served(web):
    """noVNC's utils, directory listings, traversal and unknown names are 404."""
    for path in ("/utils/novnc_proxy", "/core/", "/core", "/app/", "/xterm/", "/serial/", "/console/",
                 "/core/..%2fvnc.html", "/core/%2e%2e/%2e%2e/etc/passwd", "/../../etc/passwd",
                 "/vnc_auto", "/index.html"):
        status, headers, body = yield get(web + path)
        assert status == 404, path
        assert b"<" not in body, path  # plain text, nothing a browser would render as HTML


@pytest_twisted.inlineCallbacks
def test_plain_requests_on_the_console_paths(web):
    """GET / is a short index; a console URL opened without an upgrade says so (426)."""
    status, headers, body = yield get(f"{web}/")
    assert status == 200 and b"vnc_auto.html" in body
    for path in ("/?token=T", "/websockify", "/v1/instances/vm1/console?access_token=T"):
        status, headers, _ = yield get(web + path)
        assert (status, headers["upgrade"]) == (426, "websocket"), path


@pytest_twisted.inlineCallbacks
def test_pages_take_only_get_and_head(web):
    """POST to a page is 405; HEAD has the headers of GET without the body."""
    status, _, _ = yield get(f"{web}/vnc.html", "POST")
    assert status == 405
    status, headers, body = yield get(f"{web}/vnc_lite.html", "HEAD")
    assert (status, body) == (200, b"")
    assert "sha256-" in headers["content-security-policy"]


@pytest_twisted.inlineCallbacks
def test_serial_page_gets_a_fresh_nonce_that_its_script_carries(web):
    """Each serial page has its own CSP nonce, the same in the header and on its script tag."""
    nonces = []
    for _ in range(2):
        status, headers, body = yield get(f"{web}/serial.html?token=T")
        assert status == 200
        nonce = re.search(r"style-src 'self' 'nonce-([A-Za-z0-9_-]{20,})'",
                          headers["content-security-policy"]).group(1)
        assert f'nonce="{nonce}"'.encode() in body
        assert b"{{nonce}}" not in body
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


@pytest_twisted.inlineCallbacks
def test_npm_library_is_the_fallback_with_our_own_lite_page(tmp_path, novnc, xterm, monkeypatch):
    """Without the system's noVNC, the npm copy's core is served and vnc_auto.html is our page."""
    library = tmp_path / "npm-novnc"
    (library / "core").mkdir(parents=True)
    (library / "core" / "rfb.js").write_text("export default class RFB {}\n")
    (library / "package.json").write_text('{"version": "1.3.0"}')
    monkeypatch.setattr(clients, "NPM_NOVNC_DIR", library)
    service, base = start(tmp_path / "no-system-novnc", xterm)
    try:
        status, headers, body = yield get(f"{base}/vnc_auto.html?path=websockify%3Ftoken%3DT")
        assert status == 200 and body == clients.OWN_LITE_PAGE.read_bytes()
        assert "'unsafe-inline'" not in headers["content-security-policy"]
        status, _, lite = yield get(f"{base}/vnc_lite.html")
        assert (status, lite) == (200, body)
        status, _, body = yield get(f"{base}/core/rfb.js")
        assert (status, body) == (200, b"export default class RFB {}\n")
        status, _, body = yield get(f"{base}/vnc.html")
        assert status == 404 and b"full UI" in body
        status, _, body = yield get(f"{base}/package.json")
        assert (status, json.loads(body)["version"]) == (200, "1.3.0")
    finally:
        yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_missing_clients_say_what_to_install(tmp_path, monkeypatch):
    """Without noVNC or xterm.js, the pages answer 404 naming the package or the build step."""
    monkeypatch.setattr(clients, "NPM_NOVNC_DIR", tmp_path / "no-npm-novnc")
    service, base = start(tmp_path / "no-novnc", tmp_path / "no-xterm")
    try:
        status, _, body = yield get(f"{base}/vnc_auto.html")
        assert status == 404 and b"install the package novnc" in body
        status, _, body = yield get(f"{base}/serial.html?token=T")
        assert status == 404 and b"tools/webclients.sh" in body
        status, _, _ = yield get(f"{base}/package.json")
        assert status in (200, 404)  # 200 only where Debian's noVNC changelog exists
    finally:
        yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_allowed_origins_may_frame_the_pages(novnc, xterm):
    """With a portal in allowed_origins, the pages name it in frame-ancestors and drop X-Frame-Options."""
    service, base = start(novnc, xterm, allowed_origins=("https://horizon.example",))
    try:
        for path in ("/vnc_auto.html?path=x", "/vnc.html", "/serial.html?token=T"):
            _, headers, _ = yield get(base + path)
            assert "frame-ancestors https://horizon.example;" in headers["content-security-policy"] + ";"
            assert "x-frame-options" not in headers, path
        _, headers, _ = yield get(f"{base}/core/rfb.js")
        assert headers["x-frame-options"] == "DENY"
    finally:
        yield service.stopService()
