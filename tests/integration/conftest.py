"""
An in-process consoleproxy on real loopback sockets, with a fake hypervisor and a fake VNC
server standing in for libvirt and QEMU.
"""

from dataclasses import dataclass

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.support import api
from tests.support.fakevnc import FakeVncFactory
from tests.support.granting import GrantsAndUrls
from tests.support.memory import TEST_TIMINGS
from tests.support.ports import free_port
from tests.support.ptypair import PtyPair
from tests.support.serialclient import FakeShell
from vncproxy import config
from vncproxy.hypervisor import VncEndpoint
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.service import ConsoleProxyService

API_KEY = "integration-test-key-0123456789"


@dataclass
class SerialGuest:
    """A domain "ser1" whose serial PTY is a real PTY pair with a fake shell on the other end."""

    name: str
    uuid: str
    pty: PtyPair
    shell: FakeShell


@dataclass
class Proxy(GrantsAndUrls):
    """A service on real loopback sockets; its client calls block (run them in a thread)."""

    service: ConsoleProxyService
    hypervisor: FakeHypervisor
    vnc: FakeVncFactory
    vnc_port: int
    api_url: str
    ws_url: str
    xvpvnc_port: int
    key: str = API_KEY
    native_port: int = 0  # the [listen] vnc listener

    def grant(self, instance, console_type="vnc", **extra):
        return api.grant(self.api_url, self.key, instance, console_type, **extra)


@pytest.fixture
def make_proxy(tmp_path):
    """
    Start an in-process proxy with config fields overridden (e.g. idle_timeout=0.5); all are
    stopped at teardown.
    """
    started = []

    def make(**overrides):
        fake_vnc = FakeVncFactory(password=b"secret1")
        vnc_listener = reactor.listenTCP(0, fake_vnc, interface="127.0.0.1")
        vnc_port = vnc_listener.getHost().port
        hypervisor = FakeHypervisor(reactor)
        hypervisor.add_domain("vm1", uuid="6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69",
                              vnc=VncEndpoint(host="127.0.0.1", port=vnc_port, password="secret1"))
        hypervisor.add_domain("off1", state="shutoff")
        api_port, console_port, xvpvnc_port = free_port(), free_port(), free_port()
        native_port = free_port()
        settings = dict(
            api_listen=f"tcp:{api_port}:interface=127.0.0.1",
            console_listen=f"tcp:{console_port}:interface=127.0.0.1",
            xvpvnc_listen=f"tcp:{xvpvnc_port}:interface=127.0.0.1",
            vnc_listen=f"tcp:{native_port}:interface=127.0.0.1",
            state_dir=str(tmp_path / f"state{len(started)}"),
            **TEST_TIMINGS,
        )
        settings.update(overrides)
        service = ConsoleProxyService(config.defaults(**settings), reactor, hypervisor, [API_KEY])
        service.startService()
        started.append((service, vnc_listener))
        return Proxy(service, hypervisor, fake_vnc, vnc_port,
                     f"http://127.0.0.1:{api_port}", f"ws://127.0.0.1:{console_port}",
                     xvpvnc_port, native_port=native_port)

    yield make
    for service, vnc_listener in started:
        pytest_twisted.blockon(service.stopService())
        pytest_twisted.blockon(vnc_listener.stopListening())


@pytest.fixture
def proxy(make_proxy):
    return make_proxy()


@pytest.fixture
def add_serial_guest():
    """
    add_serial_guest(proxy) starts "ser1" on that proxy's fake hypervisor (after the service,
    as a real domain start: the service captures its PTY); stopped at teardown.
    """
    made = []

    def add(proxy):
        pty = PtyPair()
        shell = FakeShell(pty, prompt=b"[ser1 /]# ").start()
        made.append((pty, shell))
        info = proxy.hypervisor.add_domain("ser1", uuid="0c3a0a6e-8f57-4c43-9c0b-5d4f1e0d2b11",
                                           serial_pty=pty.path)
        return SerialGuest("ser1", info.uuid, pty, shell)

    yield add
    for pty, shell in made:
        shell.stop()
        pty.close()


@pytest.fixture
def serial_guest(proxy, add_serial_guest):
    return add_serial_guest(proxy)


@pytest.fixture
def make_memory_proxy(tmp_path):
    """
    Like L{make_proxy}, but the whole service runs on a memory clock with in-memory
    connections (L{tests.support.memory}); all are stopped at teardown.
    """
    from tests.support.memory import make_memory_proxy as make

    started = []

    def build(**overrides):
        proxy = make(tmp_path / f"memory{len(started)}", **overrides)
        started.append(proxy)
        return proxy

    yield build
    for proxy in started:
        proxy.stop()


@pytest.fixture
def memory_proxy(make_memory_proxy):
    return make_memory_proxy()
