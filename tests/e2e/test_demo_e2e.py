"""
tools/demo's links, as a person gets them: `tools/demo urls DOMAIN` (what the demo prints once
the service is up, and how to get the next ones) against a running service; the first link
opened in Chromium shows the guest's screen in noVNC, the second one its serial console page.
"""

import os
import re
import subprocess

import pytest

from tests.e2e.service import REPO, ServiceProcess
from tests.e2e.test_web_e2e import wait_for_connected_canvas, wait_for_line
from tests.support.browser import watch


@pytest.fixture(scope="module")
def service(vnc_guest, tmp_path_factory):
    proc = ServiceProcess(tmp_path_factory.mktemp("consoleproxy-demo"),
                          serial__domains=vnc_guest.name)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    yield context.new_page()
    context.close()


def demo_urls(service, domain):
    result = subprocess.run(
        [str(REPO / "tools" / "demo"), "urls", domain], capture_output=True, text=True,
        timeout=60, env={**os.environ, "CONSOLEPROXY_DEMO_API": service.api_url,
                         "CONSOLEPROXY_DEMO_KEYS": str(service.workdir / "api-keys")})
    assert result.returncode == 0, result.stderr
    screen = re.search(r"\(noVNC\):\s+(\S+)", result.stdout).group(1)
    serial = re.search(r"serial console:\s+(\S+)", result.stdout).group(1)
    return screen, serial


def test_the_demo_links_open_the_screen_in_novnc_and_the_serial_console(service, vnc_guest,
                                                                        page):
    screen, serial = demo_urls(service, vnc_guest.name)
    assert screen.startswith(f"http://127.0.0.1:{service.console_port}/vnc_auto.html?path=")
    assert serial.startswith(f"http://127.0.0.1:{service.console_port}/serial.html?token=")
    watch(page)
    page.goto(screen)
    wait_for_connected_canvas(page, "#status", f"Connected to QEMU ({vnc_guest.name})",
                              "#screen canvas")
    page.goto(serial)
    page.wait_for_function("() => document.body.dataset.state === 'open'", timeout=10000)
    page.keyboard.press("Enter")
    # typed only once the prompt is back: busybox's shell asks the terminal for the cursor
    # position after each prompt, and keys typed before the answer can be swallowed
    wait_for_line(page, vnc_guest.prompt.decode().strip(), timeout=15000)
    page.keyboard.type("echo demo-$((6*7))")
    page.keyboard.press("Enter")
    wait_for_line(page, "demo-42", exact=True, timeout=15000)


def test_each_run_mints_new_single_use_links(service, vnc_guest):
    first, second = demo_urls(service, vnc_guest.name), demo_urls(service, vnc_guest.name)
    assert first[0] != second[0] and first[1] != second[1]
