"""
The private names of Twisted and Autobahn the relay's fast paths rely on (vncproxy/relay/), on
the versions installed: this test fails the day a release renames or reshapes one, or changes
code a fast path copies or mirrors, on both suites (the newest releases in .venv, Debian 12's
in .venv-debian). When it fails: re-read the changed code, update the fast path, its check and
the digests below, and record the version in constraints-tested.txt.
"""

import ast
import hashlib
import inspect
import os
import textwrap

import autobahn
import pytest
import twisted
from autobahn.websocket.protocol import WebSocketProtocol, WebSocketServerProtocol
from twisted.internet import abstract, tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.logger import globalLogPublisher

from vncproxy import config as _config
from vncproxy import relay
from vncproxy.relay import _assumptions, eventloop, nvxmask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The code a fast path copies or mirrors, normalised (ast.dump: no comments, no layout), by
# version: Twisted 26.10 / Autobahn 26.11, and Debian 12's Twisted 22.4 / Autobahn 22.7.
KNOWN = {
    # vncproxy.relay.eventloop replaces it (same poll, handler, EINTR and unknown-fd handling)
    EPollReactor.doPoll: {"f96643b3df261f3f"},
    # vncproxy.relay.writethrough sends where Twisted's write would queue
    abstract.FileDescriptor.write: {"95642f3d024f3928"},
    # vncproxy.relay.zerocopy replaces doRead and calls _dataReceived
    tcp.Connection.doRead: {"4491516a056dbbc4", "ec9cdf0578003656"},
    tcp.Connection._dataReceived: {"0e59b0c7e1d04ad9", "e1d933989dcbbc25"},
    # vncproxy.relay.wsprotocol copies its fast branch
    WebSocketProtocol.sendData: {"307ad8e0e6a0964d", "422eae41230a6a00"},
    # vncproxy.relay.wsprotocol writes the frame these two would for a plain binary message
    WebSocketProtocol.sendMessage: {"15ede973d9c49a1e", "bb9656c66baedb62"},
    WebSocketProtocol.sendFrame: {"05f2a3f54bf7f6a6", "1e0556453a2b4596"},
    # vncproxy.relay.wsframes mirrors its frame checks (what the reader must hand back)
    WebSocketProtocol.processData: {"ed8c5e671732c03a", "85c2ab8df004a6ec"},
    # vncproxy.web.websocket overrides it (the reason must not be logged)
    WebSocketServerProtocol.failHandshake: {"3ea3a22feb3d50ad", "caba00ca122376af"},
}


def digest(function):
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


@pytest.fixture
def epoll():
    reactor = EPollReactor()
    yield reactor
    reactor._poller.close()
    reactor.waker.connectionLost(None)


def test_every_fast_path_has_its_names_listed_and_checked():
    """Each fast path's private names are listed, and each has a check."""
    assert set(_assumptions.NAMES) == set(_assumptions.CHECKS)
    assert {"lean_dispatch", "write_through", "zero_copy", "websocket_send",
            "websocket_receive", "websocket_unmask"} <= set(_assumptions.CHECKS)


@pytest.mark.parametrize("name", sorted(_assumptions.CHECKS))
def test_private_names_are_where_the_fast_paths_expect_them(name, epoll):
    """Every private name a fast path relies on exists with the shape it expects, here."""
    args = (epoll,) if name == "lean_dispatch" else ()
    assert _assumptions.CHECKS[name](*args) is None


@pytest.mark.parametrize("function", list(KNOWN), ids=lambda f: f.__qualname__)
def test_code_the_fast_paths_copy_is_unchanged(function):
    """The framework code a fast path copies or mirrors is a version we read."""
    assert digest(function) in KNOWN[function], (
        f"{function.__qualname__} changed (Twisted {twisted.__version__}, Autobahn "
        f"{autobahn.__version__}): re-read it, update the fast path, add {digest(function)}")


def test_installed_versions_are_recorded_as_tested():
    """The Twisted and Autobahn the suite runs on are in constraints-tested.txt."""
    with open(os.path.join(ROOT, "constraints-tested.txt"), encoding="utf-8") as f:
        record = f.read()
    assert f"twisted=={twisted.__version__}" in record or (
        f"python3-twisted {twisted.__version__}" in record)
    assert f"autobahn=={autobahn.__version__}" in record or (
        f"python3-autobahn {autobahn.__version__}" in record)


@pytest.fixture
def fresh_verdicts(monkeypatch):
    monkeypatch.setattr(relay, "_verdicts", {})
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def _warnings(events):
    return [e for e in events if e.get("log_format", "").startswith("fast path ")]


def test_a_missing_name_turns_only_its_fast_path_off_with_one_warning(fresh_verdicts, monkeypatch):
    """
    When Twisted's connection no longer has a name the write-through reads, the write-through
    and zero-copy (which needs the same names) stay off, with one warning each, however many
    sessions start; the WebSocket fast paths are unaffected.
    """
    real = tcp.Connection.__init__

    def without_temp_buffer(self, *args, **kw):
        real(self, *args, **kw)
        del self._tempDataBuffer

    monkeypatch.setattr(tcp.Connection, "__init__", without_temp_buffer)
    config = _config.from_string("")
    decided = [relay.decide(config) for _ in range(3)]
    assert decided[0] == decided[2]
    assert not decided[0].write_through and not decided[0].zero_copy
    assert decided[0].websocket_send and decided[0].websocket_receive
    warnings = _warnings(fresh_verdicts)
    assert sorted(e["name"] for e in warnings) == ["write_through", "zero_copy"]
    assert all("_tempDataBuffer" in e["problem"] for e in warnings)


def test_a_reshaped_reactor_keeps_twisteds_own_loop(fresh_verdicts, monkeypatch, epoll):
    """
    When the epoll reactor's handler is not what the lean dispatch calls, the reactor keeps
    Twisted's own doPoll (so it does not spin on errors), with one warning.
    """
    monkeypatch.setattr(EPollReactor, "_doReadOrWrite", None)
    assert not relay.enable_dispatch(epoll, _config.from_string(""))
    assert epoll.doIteration.__func__ is EPollReactor.doPoll
    assert [e["name"] for e in _warnings(fresh_verdicts)] == ["lean_dispatch"]


def test_switched_off_fast_paths_stay_off(fresh_verdicts, epoll):
    """Each switch turns its fast path off, and nothing is logged about it."""
    config = _config.from_string(
        "[vnc]\nzero_copy = false\n[relay]\nlean_dispatch = false\nwrite_through = false\n"
        "websocket_send = false\nwebsocket_receive = false\n")
    assert relay.decide(config) == relay.FastPaths.off()
    assert not relay.enable_dispatch(epoll, config)
    assert epoll.doIteration.__func__ is EPollReactor.doPoll
    assert _warnings(fresh_verdicts) == []


def test_every_fast_path_is_on_by_default_where_its_names_are(fresh_verdicts, epoll):
    """The default configuration turns every fast path on here (their checks pass)."""
    config = _config.from_string("")
    fast = relay.decide(config)
    assert fast.write_through and fast.websocket_send and fast.websocket_receive
    assert fast.zero_copy == (hasattr(os, "splice"))
    assert fast.websocket_unmask == nvxmask.applies()
    assert _warnings(fresh_verdicts) == []
    assert relay.enable_dispatch(epoll, config)
    assert epoll.doIteration.__func__ is eventloop._do_poll


class _FfiWithoutFromBuffer:
    """Autobahn's cffi object, less the one method its own wrapper does not use."""

    def __init__(self, ffi):
        self._ffi = ffi

    def __getattr__(self, name):
        if name == "from_buffer":
            raise AttributeError(name)
        return getattr(self._ffi, name)


class _BrokenLib:
    """Autobahn's NVX functions as a release might reshape them: C{process} ignores its
    masker's phase (always starts at mask byte 0)."""

    def __init__(self, lib):
        self._lib = lib
        self.nvx_xormask_new = lib.nvx_xormask_new
        self.nvx_xormask_free = lib.nvx_xormask_free

    def nvx_xormask_process(self, masker, data, n):
        self._lib.nvx_xormask_process(masker, data, n)
        if n > 1:
            data[0] ^= 0xFF


@pytest.mark.skipif(not nvxmask.applies(), reason="this Autobahn does not unmask with NVX")
@pytest.mark.parametrize("damage", ["missing", "wrong"])
def test_a_changed_nvx_module_keeps_the_public_unmasker(fresh_verdicts, monkeypatch, damage):
    """
    When Autobahn's compiled NVX module loses a name the in-place unmasker calls, or its
    functions no longer unmask the known vectors, that fast path stays off with one warning
    and the frame reader keeps the public unmasker; the rest of the receive fast path is on.
    """
    import _nvx_xormasker

    if damage == "missing":
        monkeypatch.setattr(_nvx_xormasker, "ffi", _FfiWithoutFromBuffer(_nvx_xormasker.ffi))
    else:
        monkeypatch.setattr(nvxmask, "_process", _BrokenLib(_nvx_xormasker.lib).nvx_xormask_process)
    fast = relay.decide(_config.from_string(""))
    assert fast.websocket_receive and not fast.websocket_unmask
    warnings = _warnings(fresh_verdicts)
    assert [e["name"] for e in warnings] == ["websocket_unmask"]
    assert ("from_buffer is missing" if damage == "missing" else "does not unmask") in (
        warnings[0]["problem"])


def test_without_nvx_the_unmask_switch_is_off_without_a_warning(fresh_verdicts, monkeypatch):
    """Where Autobahn does not unmask with NVX (Debian 12's uses wsaccel), the in-place
    unmasker has nothing to use: it is off, and that is not worth a warning."""
    monkeypatch.setattr(nvxmask, "applies", lambda: False)
    fast = relay.decide(_config.from_string(""))
    assert fast.websocket_receive and not fast.websocket_unmask
    assert _warnings(fresh_verdicts) == []
