"""
The twistd plugin and the composition root.
"""

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage

from vncproxy import tap
from vncproxy.hypervisor.fake import FakeHypervisor


def test_plugin_is_discoverable():
    """twistd finds a 'consoleproxy' service maker that names vncproxy.tap."""
    makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
    assert makers["consoleproxy"].module == "vncproxy.tap"


def test_options_take_a_config_file_and_overrides(tmp_path):
    """--config reads the file and --set overrides one key on top of it."""
    conf = tmp_path / "c.conf"
    conf.write_text("[tokens]\ntoken_ttl = 30\n")
    options = tap.Options()
    options.parseOptions(["--config", str(conf), "--set", "listen.console=tcp:7080"])
    assert options["config_obj"].token_ttl == 30
    assert options["config_obj"].console_listen == "tcp:7080"


@pytest.mark.parametrize("argv, message", [
    (["--set", "nodot=1"], "SECTION.KEY=VALUE"),
    (["--set", "tokens.nope=1"], "unknown key"),
    (["--config", "/nonexistent/c.conf"], "cannot read"),
])
def test_bad_options_are_usage_errors(argv, message):
    """Bad overrides and unreadable files are usage errors with a clear message, not tracebacks."""
    with pytest.raises(usage.UsageError, match=message):
        tap.Options().parseOptions(argv)


def test_make_service_builds_named_listeners(tmp_path):
    """makeService creates the default API key file and the api, console, xvpvnc and vnc listeners."""
    options = tap.Options()
    options.parseOptions(["--set", f"service.state_dir={tmp_path}/state"])
    service = tap.makeService(options, reactor=MemoryReactorClock(), hypervisor=FakeHypervisor())
    assert {s.name for s in service if s.name} == {"api", "console", "xvpvnc", "vnc"}
    key_file = tmp_path / "state" / "api-keys"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    keys = [line for line in key_file.read_text().splitlines() if not line.startswith("#")]
    assert len(keys) == 1 and len(keys[0]) >= 32


def test_make_service_gives_an_epoll_reactor_the_lean_dispatch(tmp_path):
    """makeService switches Twisted's epoll reactor to vncproxy.relay.eventloop's dispatch."""
    from twisted.internet.epollreactor import EPollReactor

    from vncproxy.relay import eventloop

    options = tap.Options()
    options.parseOptions(["--set", f"service.state_dir={tmp_path}/state"])
    reactor = EPollReactor()
    try:
        tap.makeService(options, reactor=reactor, hypervisor=FakeHypervisor())
        assert reactor.doIteration.__func__ is eventloop._do_poll
    finally:
        reactor._poller.close()
        reactor.waker.connectionLost(None)


def test_world_readable_key_file_is_refused(tmp_path):
    """A key file others can read stops the service at start with a clear message."""
    keys = tmp_path / "keys"
    keys.write_text("a-sufficiently-long-api-key\n")
    keys.chmod(0o644)
    options = tap.Options()
    options.parseOptions(["--set", f"api.keys_file={keys}"])
    with pytest.raises(usage.UsageError, match="must not be readable by others"):
        tap.makeService(options, reactor=MemoryReactorClock(), hypervisor=FakeHypervisor())


def test_unreadable_tls_ca_is_a_usage_error(tmp_path):
    """A [vnc] tls_ca that cannot be read stops the service at start, naming the key."""
    options = tap.Options()
    options.parseOptions(["--set", f"service.state_dir={tmp_path}/state",
                          "--set", f"vnc.tls_ca={tmp_path}/missing-ca.pem"])
    with pytest.raises(usage.UsageError, match=r"\[vnc\] tls_ca: cannot read"):
        tap.makeService(options, reactor=MemoryReactorClock(), hypervisor=FakeHypervisor())


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o660])
def test_key_file_writable_by_group_or_others_is_refused(tmp_path, mode):
    """A key file its group or others can write (and so add a key to) stops the service."""
    keys = tmp_path / "keys"
    keys.write_text("a-sufficiently-long-api-key\n")
    keys.chmod(mode)
    options = tap.Options()
    options.parseOptions(["--set", f"api.keys_file={keys}"])
    with pytest.raises(usage.UsageError, match=r"must not be writable by group or others"):
        tap.makeService(options, reactor=MemoryReactorClock(), hypervisor=FakeHypervisor())


@pytest.mark.parametrize("key,bits", [("aaaaaaaaaaaaaaaa", 0), ("abababababababab", 16),
                                      ("passwordpassword", 44)])
def test_low_entropy_key_is_refused_with_the_reason(tmp_path, key, bits):
    """A 16-character key of one repeated letter (or a short pattern) stops the service, saying
    how strong it is and how to make a good one."""
    keys = tmp_path / "keys"
    keys.write_text(f"# ok\nintegration-test-key-0123456789\n{key}\n")
    keys.chmod(0o600)
    options = tap.Options()
    options.parseOptions(["--set", f"api.keys_file={keys}"])
    with pytest.raises(usage.UsageError, match=rf"key 2 is too easy to guess \(about {bits} bits "
                                               r"of entropy, 64 needed.*token_urlsafe"):
        tap.makeService(options, reactor=MemoryReactorClock(), hypervisor=FakeHypervisor())
