"""
LibvirtHypervisor behaviour beyond the shared contract: its worker thread and connection
lifecycle, reopening a dead connection, and how libvirt errors are reported. Runs against
libvirt's in-process test:///default driver.
"""

import threading
import uuid

import libvirt
import pytest
import pytest_twisted
from twisted.internet import reactor, task

from vncproxy.hypervisor import HypervisorError, LifecycleKind, VncEndpoint
from vncproxy.hypervisor.libvirt_adapter import LibvirtHypervisor
from vncproxy.hypervisor.libvirt_eventloop import ensure_event_loop

TEST_URI = "test:///default"
UNREACHABLE_URI = "qemu+unix:///system?socket=/nonexistent/consoleproxy-test/libvirt-sock"


def _libvirt_error(code, domain, message):
    e = libvirt.libvirtError(message)
    e.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return e


def _pool_threads(hypervisor):
    return [t for t in threading.enumerate() if hypervisor.uri in t.name]


@pytest.fixture
def hypervisor():
    ensure_event_loop()
    hv = LibvirtHypervisor(reactor, TEST_URI)
    yield hv
    assert not hv.running, "the test must stop the service it started"


@pytest_twisted.inlineCallbacks
def test_queries_fail_unless_running(hypervisor):
    """
    Before startService and after stopService, queries fail with HypervisorError and ping
    answers False.
    """
    with pytest.raises(HypervisorError):
        yield hypervisor.describe("test")
    hypervisor.startService()
    assert (yield hypervisor.describe("test")).name == "test"
    yield hypervisor.stopService()
    with pytest.raises(HypervisorError):
        yield hypervisor.list_active()
    assert (yield hypervisor.ping()) is False


@pytest_twisted.inlineCallbacks
def test_stop_ends_the_worker_thread_and_closes_the_connection(hypervisor):
    """
    stopService closes the connection and ends the worker thread; a restarted service opens a
    new connection.
    """
    hypervisor.startService()
    yield hypervisor.ping()
    assert len(_pool_threads(hypervisor)) == 1
    conn = hypervisor._conn
    assert conn is not None and conn.isAlive()
    yield hypervisor.stopService()
    assert _pool_threads(hypervisor) == []
    assert hypervisor._conn is None
    with pytest.raises(libvirt.libvirtError):
        conn.isAlive()  # closed

    hypervisor.startService()
    try:
        assert (yield hypervisor.ping()) is True
        assert hypervisor._conn is not conn
    finally:
        yield hypervisor.stopService()


@pytest_twisted.inlineCallbacks
def test_dead_connection_is_reopened_with_events_registered_once(hypervisor, wait_until):
    """
    A connection found dead is replaced on the next query, and events keep coming, exactly
    once each.
    """
    driver = libvirt.open(TEST_URI)
    name = "libvirt-reconnect-probe"
    dom = driver.defineXML(
        f"<domain type='test'><name>{name}</name><memory>8192</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    events = []
    hypervisor.subscribe(lambda event: events.append(event) if event.name == name else None)
    hypervisor.startService()
    try:
        yield hypervisor.ping()
        old = hypervisor._conn
        old.isAlive = lambda: 0  # as libvirt reports a connection whose daemon went away
        info = yield hypervisor.describe(name)
        assert info.name == name
        assert hypervisor._conn is not old

        dom.create()
        yield wait_until(lambda: [e.kind for e in events] == [LifecycleKind.STARTED])
        dom.destroy()
        yield wait_until(lambda: LifecycleKind.STOPPED in [e.kind for e in events])
        yield task.deferLater(reactor, 0.2, lambda: None)  # time for a duplicate to arrive
        assert [e.kind for e in events] == [LifecycleKind.STARTED, LifecycleKind.STOPPED]
    finally:
        yield hypervisor.stopService()
        dom.undefine()
        driver.close()


@pytest_twisted.inlineCallbacks
def test_connection_error_is_retried_once_on_a_new_connection(hypervisor):
    """
    A call failing with an RPC-level error is retried once on a freshly opened connection.
    """
    hypervisor.startService()
    try:
        yield hypervisor.ping()
        old = hypervisor._conn

        def broken(name):
            raise _libvirt_error(
                libvirt.VIR_ERR_RPC, libvirt.VIR_FROM_RPC, "connection reset by peer"
            )

        old.lookupByName = broken
        assert (yield hypervisor.describe("test")).name == "test"
        assert hypervisor._conn is not old
    finally:
        yield hypervisor.stopService()


@pytest_twisted.inlineCallbacks
def test_other_libvirt_errors_become_hypervisor_errors(hypervisor):
    """
    Any other libvirt error fails the query with HypervisorError carrying libvirt's message,
    and keeps the connection.
    """
    hypervisor.startService()
    try:
        yield hypervisor.ping()
        conn = hypervisor._conn

        def refused(name):
            raise _libvirt_error(
                libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_FROM_ACCESS, "access denied"
            )

        conn.lookupByName = refused
        with pytest.raises(HypervisorError, match="access denied"):
            yield hypervisor.describe("test")
        assert hypervisor._conn is conn
    finally:
        yield hypervisor.stopService()


@pytest_twisted.inlineCallbacks
def test_subscriber_on_unreachable_libvirt_retries_until_stopped(hypervisor):
    """
    With a subscriber and libvirt unreachable, the service keeps trying to connect (with a
    delay), and stopService cancels the retry.
    """
    hv = LibvirtHypervisor(reactor, UNREACHABLE_URI)
    hv.subscribe(lambda event: None)
    hv.startService()
    try:
        assert (yield hv.ping()) is False  # the connection attempt queued first has failed
        call = hv._reconnect_call
        assert call is not None and call.active()
    finally:
        yield hv.stopService()
    assert not call.active()
    assert _pool_threads(hv) == []


class _CompressedClock:
    """
    The real reactor, except that callLater records the delay asked for and runs the call
    10 ms later: a backoff sequence of a minute takes a moment.
    """

    def __init__(self):
        self.delays = []

    def callLater(self, delay, f, *args, **kwargs):
        self.delays.append(delay)
        return reactor.callLater(0.01, f, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(reactor, name)


@pytest_twisted.inlineCallbacks
def test_reconnect_backs_off_and_announces_reconnected(hypervisor, monkeypatch, wait_until):
    """
    While libvirt cannot be reached, a subscribed service retries after 1, 2, 4 ... 30 s (then
    every 30 s); once through it announces RECONNECTED; a later loss starts again at 1 s.
    """
    clock = _CompressedClock()
    hv = LibvirtHypervisor(clock, TEST_URI)
    real_open = libvirt.open
    failures = {"left": 7}

    def flaky_open(uri):
        if failures["left"]:
            failures["left"] -= 1
            raise _libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC,
                                 "Failed to connect socket: Connection refused")
        return real_open(uri)

    monkeypatch.setattr(libvirt, "open", flaky_open)
    events = []
    hv.subscribe(events.append)
    hv.startService()
    try:
        yield wait_until(lambda: events)
        assert clock.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
        assert [e.kind for e in events] == [LifecycleKind.RECONNECTED]
        assert (events[0].uuid, events[0].name) == ("", "")

        # libvirtd goes away: the close callback fires; two attempts fail, the third works.
        del clock.delays[:]
        failures["left"] = 2
        hv._conn.isAlive = lambda: 0
        hv._connection_closed(libvirt.VIR_CONNECT_CLOSE_REASON_EOF)
        yield wait_until(lambda: len(events) == 2)
        assert clock.delays == [1.0, 2.0]
        assert events[1].kind == LifecycleKind.RECONNECTED
        assert (yield hv.ping()) is True
    finally:
        yield hv.stopService()



@pytest_twisted.inlineCallbacks
def test_without_read_secrets_vnc_passwords_are_never_read():
    """
    read_secrets=False ([vnc] connect = graphics-fd): domain XML is read without its secrets,
    so the VNC endpoint comes without the password the default adapter reads.
    """
    ensure_event_loop()
    conn = libvirt.open(TEST_URI)
    name = f"contract-secret-{uuid.uuid4().hex[:10]}"
    dom = conn.defineXML(f"""
        <domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>
          <os><type>hvm</type></os>
          <devices><graphics type='vnc' port='5931' autoport='no' listen='127.0.0.1'
                             passwd='pw-5931'/></devices>
        </domain>""")
    dom.create()
    blind = LibvirtHypervisor(reactor, TEST_URI, read_secrets=False)
    seeing = LibvirtHypervisor(reactor, TEST_URI)
    blind.startService()
    seeing.startService()
    try:
        info = yield blind.describe(name)
        secure = yield seeing.describe(name)
    finally:
        yield blind.stopService()
        yield seeing.stopService()
        dom.destroy()
        dom.undefine()
        conn.close()
    assert secure.vnc.password == "pw-5931"
    assert info.vnc == VncEndpoint(host="127.0.0.1", port=5931, password=None)
