"""
End to end in a real browser: headless Debian Chromium (Playwright) opens the web clients of
the real service (twistd subprocess) in front of a real QEMU guest run by a real libvirtd.

noVNC: the Nova URL form C{/vnc_auto.html?path=websockify%3Ftoken%3DT} connects and the canvas
shows the guest's screen, pixel for pixel the one QEMU reports (C{virsh screenshot}), also when
the page is reached through another host and port (a relay standing in for a load balancer at
C{public_url}); a link naming another host is stopped by the CSP of noVNC's own page, and
ignored by ours (vnc_auto.html). Serial: the page loads
under its CSP, connects to the URL its token names, relays typing, paste and output, refits on
resize and shows why a session closed (the WebSocket is played by Playwright for those); the
last test runs against the real serial console of the guest. Screenshots are kept in test-artifacts/.
"""

import select
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.service import ServiceProcess, free_port
from tests.support import api
from tests.support.browser import (
    canvas_rgb,
    differing_pixels,
    lit_pixels,
    read_screendump,
    rgb_png,
    wait_for_line,
    watch,
)
from tests.support.viewer import open_websocket
from vncproxy.config import SCHEMA
from vncproxy.web.clients import NPM_NOVNC_DIR, novnc_version

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# A text console differs from QEMU's own screen dump only where the cursor blinks.
MAX_DIFFERING = 0.01


def serial_capture(guest):
    """Settings that let the service capture the guest's serial console, where it has one."""
    return {"serial__domains": guest.name} if ("serial", "domains") in SCHEMA else {}


@pytest.fixture(scope="module")
def service(vnc_guest, tmp_path_factory):
    proc = ServiceProcess(tmp_path_factory.mktemp("consoleproxy-web"), **serial_capture(vnc_guest))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    yield page
    context.close()


# Chromium's advice about noVNC's own vnc.html (it preloads status icons it shows only on
# errors); it appears when the page has been open a few seconds, so only on a slow run.
NOVNC_UI_ADVICE = ("was preloaded using link preload but not used",)


def assert_clean(log, page, allow=()):
    """Nothing on the browser's console: no error, warning, failed request or CSP violation."""
    problems = log.problems(page, allow)
    assert problems == [], "\n".join(problems)


def token_for(service, instance, console_type="vnc", **extra):
    status, body = api.grant(service.api_url, service.key, instance, console_type, **extra)
    assert status == 200, body
    return body["access_token"]


def remote_console_url(service, instance):
    """The noVNC URL from the service's OpenStack remote-consoles route."""
    status, body = api.call(f"{service.api_url}/v2.1/servers/{instance}/remote-consoles", "POST",
                            {"remote_console": {"protocol": "vnc", "type": "novnc"}},
                            key=service.key)
    assert status == 200, body
    return body["remote_console"]["url"]


def nova_url(base, token):
    """The URL Nova's remote-consoles returns for noVNC (docs/api.md), on C{base}."""
    return f"{base}/vnc_auto.html?path={quote(f'websockify?token={token}', safe='')}"


def guest_screen(guest, tmp_path):
    """The guest's screen as QEMU itself reports it (a screen dump through libvirt)."""
    shot = tmp_path / "screen"
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", "screenshot", guest.name, str(shot)],
                   check=True, capture_output=True)
    return read_screendump(shot)


def wait_for_connected_canvas(page, status_selector, text, canvas_selector):
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)",
        arg=[status_selector, text], timeout=20000)
    # The first framebuffer update paints the whole screen.
    page.wait_for_function(
        """(sel) => { const c = document.querySelector(sel);
                      if (!c || !c.width) return false;
                      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                      for (let i = 0; i < d.length; i += 4) if (d[i] || d[i+1] || d[i+2]) return true;
                      return false; }""", arg=canvas_selector, timeout=20000)


def assert_canvas_matches_guest(page, guest, tmp_path, canvas_selector, name):
    """
    The canvas equals QEMU's screen dump but for the blinking cursor; both kept as artifacts.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    for _ in range(10):  # the cursor may blink between the two captures: look again
        width, height, seen = canvas_rgb(page, canvas_selector)
        q_width, q_height, truth = guest_screen(guest, tmp_path)
        assert (width, height) == (q_width, q_height)
        differing = differing_pixels(seen, truth)
        if differing <= MAX_DIFFERING * width * height:
            break
        time.sleep(0.3)
    page.locator(canvas_selector).screenshot(path=str(ARTIFACTS / f"{name}.png"))
    rgb_png(ARTIFACTS / f"{name}-qemu-screendump.png", q_width, q_height, truth)
    assert lit_pixels(seen) > 0.002 * width * height, "the canvas is blank"
    assert differing <= MAX_DIFFERING * width * height, \
        f"{differing} of {width * height} pixels differ from QEMU's screen"


def test_nova_novnc_url_shows_the_guest_screen(service, vnc_guest, page, tmp_path):
    """The URL of remote-consoles (vnc_auto.html?path=websockify%3Ftoken%3DT) shows the guest's screen."""
    log = watch(page)
    url = remote_console_url(service, vnc_guest.uuid)
    assert url.startswith(f"http://127.0.0.1:{service.console_port}/vnc_auto.html"
                          "?path=websockify%3Ftoken%3D")
    response = page.goto(url)
    csp = response.headers["content-security-policy"]
    assert "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    wait_for_connected_canvas(page, "#status", f"Connected to QEMU ({vnc_guest.name})",
                              "#screen canvas")
    assert_canvas_matches_guest(page, vnc_guest, tmp_path, "#screen canvas", "novnc-vnc_auto")
    page.screenshot(path=str(ARTIFACTS / "novnc-vnc_auto-page.png"))
    assert_clean(log, page)


def test_full_novnc_ui_connects(service, vnc_guest, page, tmp_path):
    """vnc.html (noVNC's full UI) with autoconnect and Nova's path connects and shows the screen."""
    log = watch(page)
    token = token_for(service, vnc_guest.name)
    base = f"http://127.0.0.1:{service.console_port}"
    page.goto(f"{base}/vnc.html?autoconnect=true&path={quote(f'websockify?token={token}', safe='')}")
    wait_for_connected_canvas(page, "#noVNC_status", "Connected", "#noVNC_container canvas")
    assert_canvas_matches_guest(page, vnc_guest, tmp_path, "#noVNC_container canvas", "novnc-vnc")
    assert page.text_content('.noVNC_version') == novnc_version('/usr/share/novnc')
    assert_clean(log, page, allow=NOVNC_UI_ADVICE)


def test_link_naming_another_host_is_stopped_by_the_csp(service, vnc_guest, page):
    """A host= in the link cannot send noVNC's own page (vnc_lite.html reads it) elsewhere: the
    CSP blocks it, the token stays unused."""
    log = watch(page)
    token = token_for(service, vnc_guest.name)
    # Loaded from localhost, told to connect to 127.0.0.1: the same server, another origin.
    url = nova_url(f"http://localhost:{service.console_port}", token).replace(
        "/vnc_auto.html?", "/vnc_lite.html?") + "&host=127.0.0.1"
    page.goto(url)
    page.wait_for_function("() => window.__cspViolations.length > 0", timeout=10000)
    violations = page.evaluate("window.__cspViolations")
    assert all(v.startswith("connect-src") for v in violations), violations
    assert log.problems(page)  # the blocked connection is reported, as it should be
    # Nothing reached the service, so the token still opens the console.
    open_websocket(f"{service.ws_url}/websockify?token={token}").close()


def test_our_novnc_page_takes_no_host_from_the_link(service, vnc_guest, page):
    """vnc_auto.html, our page, ignores a host= in the link: it connects to its own origin."""
    log = watch(page)
    url = nova_url(f"http://localhost:{service.console_port}", token_for(service, vnc_guest.name))
    page.goto(url + "&host=127.0.0.1&port=1")
    wait_for_connected_canvas(page, "#status", f"Connected to QEMU ({vnc_guest.name})",
                              "#screen canvas")
    assert page.evaluate("window.__cspViolations") == []
    assert_clean(log, page)


class Relay:
    """
    A TCP relay on its own port in front of the console listener: a load balancer in miniature.
    """

    def __init__(self, target_port):
        self.port = free_port()
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self._server.settimeout(0.2)
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a, b):
        with a, b:
            while not self._stop:
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for sock in ready:
                    try:
                        data = sock.recv(65536)
                        if data:
                            (b if sock is a else a).sendall(data)
                    except OSError:  # either side reset: the relay just ends, like a real one
                        data = b""
                    if not data:
                        return

    def close(self):
        self._stop = True
        self._server.close()


def test_novnc_behind_public_url(vnc_guest, browser, tmp_path_factory, tmp_path):
    """Reached at public_url (another host name and port, through a relay), the Nova URL connects."""
    proc = ServiceProcess(tmp_path_factory.mktemp("consoleproxy-lb"))
    relay = Relay(proc.console_port)
    public = f"http://localhost:{relay.port}"
    proc.config_path.write_text(proc.config_path.read_text().replace(
        f"public_url = http://127.0.0.1:{proc.console_port}", f"public_url = {public}"))
    proc.start()
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    try:
        url = remote_console_url(proc, vnc_guest.uuid)
        assert url.startswith(f"{public}/vnc_auto.html?path=")
        page = context.new_page()
        log = watch(page)
        page.goto(url)
        wait_for_connected_canvas(page, "#status", "Connected to", "#screen canvas")
        assert_canvas_matches_guest(page, vnc_guest, tmp_path, "#screen canvas",
                                    "novnc-behind-public-url")
        assert_clean(log, page)
    finally:
        context.close()
        proc.stop()
        relay.close()


def test_npm_novnc_when_the_system_has_none(vnc_guest, browser, tmp_path_factory, tmp_path):
    """Without the system's noVNC, the npm-built library and our own page open the Nova URL."""
    assert (NPM_NOVNC_DIR / "core" / "rfb.js").is_file(), "run tools/webclients.sh"
    workdir = tmp_path_factory.mktemp("consoleproxy-npm-novnc")
    proc = ServiceProcess(workdir, web__novnc_dir=workdir / "no-system-novnc").start()
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    try:
        page = context.new_page()
        log = watch(page)
        page.goto(nova_url(f"http://127.0.0.1:{proc.console_port}", token_for(proc, vnc_guest.name)))
        assert page.title() == "Console"  # ours, not noVNC's
        wait_for_connected_canvas(page, "#status", f"Connected to QEMU ({vnc_guest.name})",
                                  "#screen canvas")
        assert_canvas_matches_guest(page, vnc_guest, tmp_path, "#screen canvas", "novnc-npm-copy")
        page.screenshot(path=str(ARTIFACTS / "novnc-npm-copy-page.png"))
        assert_clean(log, page)
    finally:
        context.close()
        proc.stop()


# -- serial ---------------------------------------------------------------------------------

class FakeSerial:
    """
    Plays the serial WebSocket for the page (Playwright routes the page's WebSocket here).
    """

    def __init__(self, page):
        self.urls, self.received, self.routes = [], [], []
        page.route_web_socket(lambda url: "token=" in url, self._handle)

    def _handle(self, ws):
        self.urls.append(ws.url)
        self.routes.append(ws)
        ws.on_message(lambda message: self.received.append(
            message if isinstance(message, bytes) else message.encode()))
        ws.send(b"\r\nWelcome\r\n[guest /]# ")

    def typed(self):
        return b"".join(self.received)


def open_serial_page(page, service, token):
    log = watch(page)
    response = page.goto(f"http://127.0.0.1:{service.console_port}/serial.html?token={token}")
    return log, response


def test_serial_page_loads_under_its_csp_and_talks_to_its_token(service, page):
    """The serial page connects to /?token=T of its own origin, shows output, sends typing and paste."""
    fake = FakeSerial(page)
    log, response = open_serial_page(page, service, "tok-123_ABC")
    csp = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "connect-src 'self'" in csp
    assert response.headers["cache-control"] == "no-store"
    page.wait_for_function("() => document.body.dataset.state === 'open'", timeout=10000)
    assert fake.urls == [f"ws://127.0.0.1:{service.console_port}/?token=tok-123_ABC"]
    wait_for_line(page, "[guest /]#")
    page.keyboard.type("echo hi")
    page.keyboard.press("Enter")
    page.evaluate("""() => { const data = new DataTransfer(); data.setData('text/plain', 'pasted ü');
        document.querySelector('.xterm-helper-textarea').dispatchEvent(new ClipboardEvent('paste',
            {clipboardData: data, bubbles: true, cancelable: true})); }""")
    deadline = time.monotonic() + 5
    while b"pasted" not in fake.typed() and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert fake.typed() == "echo hi\rpasted ü".encode()
    fake.routes[0].send(b"echo hi\r\nhi\r\n[guest /]# ")
    wait_for_line(page, "hi", exact=True)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serial-page-fake-console.png"))
    assert_clean(log, page)


def test_serial_page_refits_the_terminal_on_resize(service, page):
    """Making the window smaller gives the terminal fewer columns and rows."""
    FakeSerial(page)
    open_serial_page(page, service, "t")
    page.wait_for_function("() => document.body.dataset.state === 'open'", timeout=10000)
    before = page.evaluate("[window.consoleTerminal.cols, window.consoleTerminal.rows]")
    page.set_viewport_size({"width": 500, "height": 300})
    page.wait_for_function(f"() => window.consoleTerminal.cols < {before[0]} && "
                           f"window.consoleTerminal.rows < {before[1]}", timeout=5000)


@pytest.mark.parametrize("code, reason, words", [
    (4004, "taken over", "Console taken over"),
    (4007, "instance stopped", "The instance stopped"),
])
def test_serial_page_says_why_the_session_closed(service, page, code, reason, words):
    """Close codes 4004 and 4007 become a clear message in the page's status bar."""
    fake = FakeSerial(page)
    log, _ = open_serial_page(page, service, "t")
    page.wait_for_function("() => document.body.dataset.state === 'open'", timeout=10000)
    fake.routes[0].close(code=code, reason=reason)
    page.wait_for_function("() => document.body.dataset.state === 'closed'", timeout=5000)
    assert page.evaluate("document.body.dataset.closeCode") == str(code)
    assert words in page.inner_text("#status")
    page.screenshot(path=str(ARTIFACTS / f"serial-page-closed-{code}.png"))
    assert_clean(log, page)


def test_serial_page_with_a_refused_token(service, page):
    """Against the real service, an unknown token is refused before the upgrade and the page says so."""
    log, _ = open_serial_page(page, service, "A" * 43)
    page.wait_for_function("() => document.body.dataset.state === 'closed'", timeout=10000)
    assert "Could not connect" in page.inner_text("#status")
    # Chromium reports the refused upgrade on the console; nothing else may appear.
    assert [p for p in log.problems(page) if "WebSocket connection to" not in p] == []


def test_serial_page_on_the_real_guest(service, vnc_guest, page):
    """The page shows the guest's prompt, a typed command's output, and a forced takeover's message."""
    status, body = api.grant(service.api_url, service.key, vnc_guest.name, "serial")
    assert status == 200, body
    log, _ = open_serial_page(page, service, body["access_token"])
    page.wait_for_function("() => document.body.dataset.state === 'open'", timeout=10000)
    page.keyboard.press("Enter")
    prompt = vnc_guest.prompt.decode().strip()
    wait_for_line(page, prompt, timeout=15000)
    page.keyboard.type("echo web-$((6*7))")
    page.keyboard.press("Enter")
    wait_for_line(page, "web-42", exact=True, timeout=15000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serial-page-real-guest.png"))
    status, forced = api.grant(service.api_url, service.key, vnc_guest.name, "serial", force=True)
    assert status == 200, forced
    other = open_websocket(f"{service.ws_url}/?token={forced['access_token']}")
    try:
        page.wait_for_function("() => document.body.dataset.state === 'closed'", timeout=10000)
        assert page.evaluate("document.body.dataset.closeCode") == "4004"
        assert "Console taken over" in page.inner_text("#status")
        page.screenshot(path=str(ARTIFACTS / "serial-page-taken-over.png"))
    finally:
        other.close()
    assert_clean(log, page)
