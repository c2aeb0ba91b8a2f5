"""
Fixtures for the hypervisor contract: one "driver" per L{IHypervisor} implementation, which
arranges the world (defines, starts, stops and undefines domains) the way that implementation
sees it.

    world       -> a driver, parametrized over "fake" (FakeHypervisor) and "libvirt"
                   (LibvirtHypervisor on libvirt's in-process test:///default driver); its
                   C{hypervisor} is started, and stopped after the test
    wait_until  -> wait_until(predicate, timeout=5.0): a Deferred that fires once predicate()
                   is true, polling every 50 ms, failing after timeout seconds

test:///default keeps one set of domains per process, shared by every connection to it (checked
with libvirt 9.0: a domain defined on one connection is seen on another, and each connection's
event callbacks get every event), so the driver's own connection changes what the adapter
under test sees and fires its events. Domain names are unique per test; each driver
undefines what it defined.
"""

import os
import uuid
from xml.sax.saxutils import escape, quoteattr

import libvirt
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from vncproxy.hypervisor import DomainState, VncEndpoint
from vncproxy.hypervisor.fake import FakeHypervisor
from vncproxy.hypervisor.libvirt_adapter import LibvirtHypervisor
from vncproxy.hypervisor.libvirt_eventloop import ensure_event_loop

TEST_URI = "test:///default"
# A libvirtd socket that cannot exist: the remote driver fails at once, without a daemon.
UNREACHABLE_URI = "qemu+unix:///system?socket=/nonexistent/consoleproxy-test/libvirt-sock"


class _Driver:
    """
    What both drivers share: unique names, PTYs to point serial ports at, cleanup.
    """

    def __init__(self):
        self._fds: list[int] = []
        self._defined: list[str] = []
        self.leaders: dict[str, int] = {}  # follower path -> leader fd (the "QEMU" side)

    def unique_name(self, label: str = "vm") -> str:
        return f"contract-{label}-{uuid.uuid4().hex[:10]}"

    def new_pty(self) -> str:
        """
        Open a PTY pair (closed at teardown) and return the path of its follower side.
        """
        leader, follower = os.openpty()
        self._fds += [leader, follower]
        path = os.ttyname(follower)
        self.leaders[path] = leader
        return path

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


class FakeDriver(_Driver):
    kind = "fake"

    def __init__(self):
        super().__init__()
        self.hypervisor = FakeHypervisor(reactor)

    def define_and_start(self, name, vnc_port, vnc_password, serial_path) -> str:
        info = self.hypervisor.add_domain(
            name,
            vnc=VncEndpoint(host="127.0.0.1", port=vnc_port, password=vnc_password),
            serial_pty=serial_path,
        )
        self._defined.append(name)
        return info.uuid

    def destroy(self, name) -> None:
        self.hypervisor.set_state(name, DomainState.SHUTOFF)

    def start(self, name) -> None:
        self.hypervisor.set_state(name, DomainState.RUNNING)

    def suspend(self, name) -> None:
        self.hypervisor.set_state(name, DomainState.PAUSED)

    def resume(self, name) -> None:
        self.hypervisor.set_state(name, DomainState.RUNNING)

    def undefine(self, name) -> None:
        self.hypervisor.remove_domain(name)
        self._defined.remove(name)

    def unreachable_hypervisor(self):
        hypervisor = FakeHypervisor()
        hypervisor.available = False
        return hypervisor


class LibvirtDriver(_Driver):
    kind = "libvirt"

    def __init__(self):
        super().__init__()
        ensure_event_loop()  # before this process's first libvirt.open()
        self._conn = libvirt.open(TEST_URI)
        self.hypervisor = LibvirtHypervisor(reactor, TEST_URI)

    def define_and_start(self, name, vnc_port, vnc_password, serial_path) -> str:
        xml = f"""
            <domain type='test'>
              <name>{escape(name)}</name>
              <memory unit='MiB'>64</memory>
              <os><type>hvm</type></os>
              <devices>
                <serial type='dev'><source path={quoteattr(serial_path)}/></serial>
                <graphics type='vnc' port='{int(vnc_port)}' autoport='no' listen='127.0.0.1'
                          passwd={quoteattr(vnc_password)}/>
              </devices>
            </domain>"""
        dom = self._conn.defineXML(xml)
        self._defined.append(name)
        dom.create()
        return dom.UUIDString()

    def destroy(self, name) -> None:
        self._conn.lookupByName(name).destroy()

    def start(self, name) -> None:
        self._conn.lookupByName(name).create()

    def suspend(self, name) -> None:
        self._conn.lookupByName(name).suspend()

    def resume(self, name) -> None:
        self._conn.lookupByName(name).resume()

    def undefine(self, name) -> None:
        dom = self._conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        self._defined.remove(name)

    def unreachable_hypervisor(self):
        return LibvirtHypervisor(reactor, UNREACHABLE_URI)

    def close(self) -> None:
        for name in list(self._defined):
            try:
                self.undefine(name)
            except libvirt.libvirtError:
                pass
        self._conn.close()
        super().close()


DRIVERS = {"fake": FakeDriver, "libvirt": LibvirtDriver}


@pytest_twisted.async_yield_fixture(params=sorted(DRIVERS))
async def world(request):
    driver = DRIVERS[request.param]()
    driver.hypervisor.startService()
    try:
        yield driver
    finally:
        await defer.maybeDeferred(driver.hypervisor.stopService)
        driver.close()


@pytest.fixture
def wait_until():
    @defer.inlineCallbacks
    def wait_until(predicate, timeout=5.0):
        deadline = reactor.seconds() + timeout
        while not predicate():
            if reactor.seconds() > deadline:
                raise AssertionError(f"still false after {timeout} s: {predicate}")
            yield task.deferLater(reactor, 0.05, lambda: None)

    return wait_until
