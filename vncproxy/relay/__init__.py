"""
The relay's fast paths: everything in the service that reaches into Twisted's or Autobahn's
private names, fenced in one package.

Six fast paths, each with its own switch (C{[relay]} in the configuration; zero-copy keeps its
C{[vnc] zero_copy}), each on only when switched on *and* every private name it relies on exists
with the shape it expects (L{vncproxy.relay._assumptions}, checked once per process at start).
When a check fails the service logs one warning line naming what changed and serves by the
public path; it never turns a fast path on to fail on every event.

    - C{lean_dispatch} (L{eventloop}): the epoll reactor calls each ready socket's handler
      directly, without Twisted's legacy per-event log context;
    - C{write_through} (L{writethrough}): the relay's writes reach the socket inside C{write()}
      when nothing is queued;
    - C{zero_copy} (L{zerocopy}): QEMU's screen updates go to the viewer's socket by splice(2);
    - C{websocket_send} and C{websocket_receive} (L{wsprotocol}, L{wsframes}): the console
      WebSocket's binary messages go out with our own frame header and without Autobahn's
      eager debug lines, and the viewer's binary frames are read by our own sans-IO reader
      instead of Autobahn's per-frame machinery;
    - C{websocket_unmask} (L{nvxmask}): that reader unmasks a read's frames in place with the
      C functions of Autobahn's NVX masker.

L{start} is the one call a session makes when its relay begins.
"""

from dataclasses import dataclass

from twisted.logger import Logger

from vncproxy.relay import _assumptions, nvxmask, writethrough
from vncproxy.relay.zerocopy import SpliceRelay

_log = Logger()

# Relay tuning, measured with bench/ (docs/performance.md): each chunk read from QEMU goes to the
# viewer's socket in one send() (Twisted's default caps a send at 128 KiB). Flow control is
# unchanged: the viewer's transport still pauses QEMU as soon as one chunk is waiting.
VIEWER_SEND_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class FastPaths:
    """
    Which fast paths are on (all off: the public paths only).
    """

    lean_dispatch: bool = False
    write_through: bool = False
    zero_copy: bool = False
    websocket_send: bool = False
    websocket_receive: bool = False
    websocket_unmask: bool = False

    @classmethod
    def off(cls):
        return cls()


_verdicts = {}


def _usable(name, *args):
    """
    Whether fast path C{name} passed its check (run once per process and kind of argument; one
    warning if not).
    """
    key = (name, *map(type, args))
    if key not in _verdicts:
        problem = _assumptions.CHECKS[name](*args)
        if problem:
            _log.warn("fast path {name} off: {problem}; serving by the public path",
                      name=name, problem=problem)
        _verdicts[key] = not problem
    return _verdicts[key]


def decide(config):
    """
    The fast paths C{config} asks for that passed their checks (not C{lean_dispatch}: that one
    is the reactor's, see L{enable_dispatch}).
    """
    wanted = {
        "write_through": config.relay_write_through,
        "zero_copy": config.vnc_zero_copy,
        "websocket_send": config.relay_websocket_send,
        "websocket_receive": config.relay_websocket_receive,
        # (only where Autobahn uses NVX; elsewhere the public unmasker is Autobahn's own choice)
        "websocket_unmask": (config.relay_websocket_receive and config.relay_websocket_unmask
                             and nvxmask.applies()),
    }
    return FastPaths(**{name: on and _usable(name) for name, on in wanted.items()})


def enable_dispatch(reactor, config):
    """
    Give C{reactor} the lean dispatch when C{[relay] lean_dispatch} asks for it and the reactor
    is Twisted's epoll reactor with the names it relies on.
    """
    from twisted.internet.epollreactor import EPollReactor

    from vncproxy.relay import eventloop

    if not config.relay_lean_dispatch or not isinstance(reactor, EPollReactor):
        return False  # (any other reactor, a test clock: left alone)
    if not _usable("lean_dispatch", reactor):
        return False
    return eventloop.enable(reactor)


def tune_websocket(factory, reactor, fast):
    """
    Autobahn's C{factory}, as the console uses it: timers on C{reactor} (see
    L{use_reactor_timers}), its C{fast} paths, and with C{websocket_send} its eager debug
    formatting at each connection skipped (L{wsprotocol.quiet_debug_lines}).
    """
    from vncproxy.relay import wsprotocol

    factory.fast_paths = fast
    use_reactor_timers(factory, reactor)
    if fast.websocket_send:
        wsprotocol.quiet_debug_lines()


def use_reactor_timers(factory, reactor):
    """
    Make Autobahn's C{factory} schedule its timers (opening and closing handshake, auto-ping)
    on C{reactor} instead of txaio's global loop: the clock is the injected one.
    """
    if _usable("autobahn_timers"):
        factory._batched_timer = _ReactorTimer(reactor)


class _ReactorTimer:
    """
    What Autobahn asks of its timer: C{call_later}, returning something it may C{cancel()}.
    """

    def __init__(self, reactor):
        self.call_later = reactor.callLater


def write_through(fast, transport):
    """
    With C{write_through} on, C{transport}'s writes reach its socket inside C{write()} from now
    on (L{writethrough}): a session's connections get it as they open, so that each step of
    the upgrade and of both RFB handshakes goes out in the call that made it, not one reactor
    turn later (nine turns per set-up).
    """
    if fast.write_through:
        writethrough.enable(transport)


def start(fast, qemu, viewer, spliced):
    """
    The fast paths of one relay, as it starts: QEMU's transport C{qemu}, the viewer adapter
    C{viewer}; C{spliced(n)} accounts for what zero-copy moved.

    @return: the L{SpliceRelay}, or C{None}.
    """
    viewer_transport = viewer.network_transport
    if hasattr(viewer_transport, "SEND_LIMIT"):
        viewer_transport.SEND_LIMIT = VIEWER_SEND_LIMIT
    if fast.write_through:
        # Keystrokes and screen updates go out in the call that received them, not a reactor
        # turn later.
        writethrough.enable(qemu)
        writethrough.enable(viewer_transport)
    if fast.zero_copy:
        # Screen updates go from QEMU's socket to the viewer's without a copy when both are
        # plain sockets.
        return SpliceRelay.install(qemu, viewer, spliced)
    return None


__all__ = ["FastPaths", "decide", "enable_dispatch", "start", "tune_websocket",
           "use_reactor_timers", "write_through",
           "VIEWER_SEND_LIMIT"]
