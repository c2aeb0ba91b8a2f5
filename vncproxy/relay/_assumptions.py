"""
Every private (or undocumented) name of Twisted and Autobahn that a fast path relies on, and the
check each fast path passes at start before it turns itself on.

Each check returns C{None} when every name exists with the shape the fast path expects, or one
line saying what does not (the fast path then stays off and the public path serves). Names that
only exist on a live object are looked at on a probe built in memory: a socket pair wrapped in
Twisted's C{tcp.Connection}, an Autobahn server protocol taken through its opening handshake on
a C{StringTransport} and a test clock. Nothing here touches the running reactor.

C{NAMES} is the list a reader (and C{tests/unit/test_framework_assumptions.py}) can go through;
the checks below test exactly these.
"""

import inspect
import os
import socket
from base64 import b64encode

#: fast path -> the names it relies on, as "module.Class.name" (instance attributes included).
NAMES = {
    "lean_dispatch": (
        "twisted.internet.epollreactor.EPollReactor.doPoll",
        "twisted.internet.epollreactor.EPollReactor.doIteration (an alias of doPoll)",
        "twisted.internet.epollreactor.EPollReactor._doReadOrWrite(selectable, fd, event)",
        "twisted.internet.epollreactor.EPollReactor()._poller.poll(timeout, maxevents)",
        "twisted.internet.epollreactor.EPollReactor()._selectables (dict fd -> selectable)",
    ),
    "write_through": (
        "twisted.internet.tcp.Connection.TLS (bool)",
        "twisted.internet.tcp.Connection().dataBuffer (bytes)",
        "twisted.internet.tcp.Connection()._tempDataBuffer (list)",
        "twisted.internet.tcp.Connection().connected, .disconnecting",
        "twisted.internet.tcp.Connection().socket (send)",
        "twisted.internet.tcp.Connection().write (instance attribute may replace it)",
    ),
    "zero_copy": (
        "twisted.internet.tcp.Connection()._dataReceived(data)",
        "twisted.internet.tcp.Connection().doRead (instance attribute may replace it)",
        "twisted.internet.tcp.Connection().bufferSize (int)",
        "twisted.internet.main.CONNECTION_LOST, CONNECTION_DONE",
        "os.splice, os.pipe2",
        "(and every name of write_through)",
    ),
    "websocket_send": (
        "autobahn WebSocketServerProtocol()._dataReceived(data)",
        "autobahn WebSocketServerProtocol().send_queue (sized), .send_state, SEND_STATE_GROUND",
        "autobahn WebSocketServerProtocol().logOctets (bool)",
        "autobahn WebSocketServerProtocol().trafficStats.outgoingOctetsWireLevel (int)",
        "autobahn WebSocketServerProtocol().state, STATE_OPEN",
        "autobahn WebSocketServerProtocol.sendData(data, sync, chopsize)",
        "autobahn WebSocketServerProtocol.sendMessage(payload, isBinary, fragmentSize, sync, "
        "doNotCompress)",
        "autobahn WebSocketServerProtocol()._perMessageCompress, .maskServerFrames, "
        ".autoFragmentSize, .logFrames, .trackedTimings (None), .maxMessagePayloadSize",
        "autobahn WebSocketServerProtocol().trafficStats.outgoingWebSocketMessages, "
        "outgoingOctetsAppLevel, outgoingOctetsWebSocketLevel, outgoingWebSocketFrames (int)",
        "autobahn.websocket.protocol.pformat (pprint.pformat, called eagerly for debug lines)",
        "txaio.get_global_log_level()",
    ),
    "websocket_receive": (
        "autobahn WebSocketServerProtocol()._dataReceived(data)",
        "autobahn WebSocketServerProtocol().current_frame (None between frames)",
        "autobahn WebSocketServerProtocol().inside_message (bool)",
        "autobahn WebSocketServerProtocol().data (bytes: Autobahn's receive buffer)",
        "autobahn WebSocketServerProtocol()._perMessageCompress (None: no extension)",
        "autobahn WebSocketServerProtocol().maxFramePayloadSize, .maxMessagePayloadSize (int)",
        "autobahn WebSocketServerProtocol().requireMaskedClientFrames, .applyMask (bool)",
        "autobahn.websocket.xormasker.create_xor_masker(mask, length).process(data)",
    ),
    "websocket_unmask": (
        "_nvx_xormasker.ffi.from_buffer(cdecl, buffer), .ffi.NULL (Autobahn's compiled NVX module)",
        "_nvx_xormasker.lib.nvx_xormask_new(mask), nvx_xormask_process(m, data, n), "
        "nvx_xormask_free(m) (in place, the mask phase following the pointer)",
        "(only where autobahn.websocket.USES_NVX, public, is true)",
    ),
    "autobahn_timers": (
        "autobahn WebSocketServerFactory()._batched_timer.call_later(delay, fun, *args)",
    ),
}


class _Missing(Exception):
    pass


def _need(obj, name, kind=None, where=""):
    """
    C{obj.name}, which must exist (and be an instance of C{kind}, or callable for C{callable}).
    """
    try:
        value = getattr(obj, name)
    except AttributeError:
        raise _Missing(f"{where or type(obj).__name__}.{name} is missing") from None
    if kind is callable:
        if not callable(value):
            raise _Missing(f"{where or type(obj).__name__}.{name} is not callable")
    elif kind is not None and not isinstance(value, kind):
        raise _Missing(f"{where or type(obj).__name__}.{name} is a {type(value).__name__}, "
                       f"not {getattr(kind, '__name__', kind)}")
    return value


def _params(function, expected, where):
    try:
        names = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        raise _Missing(f"{where} has no signature") from None
    if names[: len(expected)] != list(expected):
        raise _Missing(f"{where} takes {names}, not {list(expected)}")


def _checked(probe):
    def check(*args):
        try:
            probe(*args)
        except _Missing as e:
            return str(e)
        except Exception as e:  # a probe that cannot even be built: the names moved a lot
            return f"probe failed: {type(e).__name__}: {e}"
        return None

    check.__name__ = probe.__name__
    check.__doc__ = probe.__doc__
    return check


@_checked
def lean_dispatch(reactor):
    """
    C{reactor} is Twisted's epoll reactor with the names L{vncproxy.relay.eventloop} uses.
    """
    from twisted.internet.epollreactor import EPollReactor

    if not isinstance(reactor, EPollReactor):
        raise _Missing(f"the reactor is {type(reactor).__name__}, not EPollReactor")
    do_poll = _need(EPollReactor, "doPoll", callable, "EPollReactor")
    if type(reactor).doIteration is not do_poll:
        raise _Missing("EPollReactor.doIteration is no longer doPoll")
    _params(do_poll, ("self", "timeout"), "EPollReactor.doPoll")
    _params(_need(EPollReactor, "_doReadOrWrite", callable, "EPollReactor"),
            ("self", "selectable", "fd", "event"), "EPollReactor._doReadOrWrite")
    _need(_need(reactor, "_poller"), "poll", callable, "EPollReactor._poller")
    _need(reactor, "_selectables", dict)


def _tcp_probe():
    from twisted.internet import tcp
    from twisted.internet.protocol import Protocol

    left, right = socket.socketpair()
    connection = tcp.Connection(left, Protocol())
    return connection, (left, right)


@_checked
def write_through():
    """
    Twisted's TCP connection has the buffers and flags L{vncproxy.relay.writethrough} reads.
    """
    from twisted.internet import tcp

    _need(tcp.Connection, "TLS", bool, "tcp.Connection")
    connection, sockets = _tcp_probe()
    try:
        _need(connection, "dataBuffer", bytes)
        _need(connection, "_tempDataBuffer", list)
        _need(connection, "connected", (bool, int))
        _need(connection, "disconnecting", (bool, int))
        _need(_need(connection, "socket"), "send", callable, "tcp.Connection.socket")
        _need(connection, "write", callable)
    finally:
        for s in sockets:
            s.close()


@_checked
def zero_copy():
    """
    What L{vncproxy.relay.zerocopy} needs beyond the write-through's names.
    """
    from twisted.internet import main

    problem = write_through()
    if problem:
        raise _Missing(problem)
    if not (hasattr(os, "splice") and hasattr(os, "pipe2")):
        raise _Missing("this platform has no os.splice")
    _need(main, "CONNECTION_LOST", where="twisted.internet.main")
    _need(main, "CONNECTION_DONE", where="twisted.internet.main")
    connection, sockets = _tcp_probe()
    try:
        _params(_need(connection, "_dataReceived", callable), ("data",),
                "tcp.Connection._dataReceived")
        _need(connection, "doRead", callable)
        _need(connection, "bufferSize", int)
    finally:
        for s in sockets:
            s.close()


_HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: probe\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: " + b64encode(b"consoleproxy-key") + b"\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")


def open_probe():
    """
    An Autobahn server protocol taken through the opening handshake in memory (a test clock, a
    C{StringTransport}), for looking at its instance attributes.
    """
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    factory = WebSocketServerFactory(reactor=Clock())
    factory.protocol = WebSocketServerProtocol
    factory.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 0))
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(_HANDSHAKE)
    if protocol.state != WebSocketServerProtocol.STATE_OPEN:
        raise _Missing("the in-memory opening handshake did not open the probe")
    return protocol


@_checked
def websocket_send():
    """
    The names the send shortcut of L{vncproxy.relay.wsprotocol} reads.
    """
    from autobahn.twisted.websocket import WebSocketServerProtocol

    _params(_need(WebSocketServerProtocol, "sendData", callable, "WebSocketServerProtocol"),
            ("self", "data", "sync", "chopsize"), "WebSocketServerProtocol.sendData")
    _params(_need(WebSocketServerProtocol, "sendMessage", callable, "WebSocketServerProtocol"),
            ("self", "payload", "isBinary", "fragmentSize", "sync", "doNotCompress"),
            "WebSocketServerProtocol.sendMessage")
    _need(WebSocketServerProtocol, "STATE_OPEN", int, "WebSocketServerProtocol")
    _need(WebSocketServerProtocol, "SEND_STATE_GROUND", int, "WebSocketServerProtocol")
    protocol = open_probe()
    _params(_need(protocol, "_dataReceived", callable), ("data",),
            "WebSocketServerProtocol._dataReceived")
    len(_need(protocol, "send_queue"))
    _need(protocol, "send_state", int)
    _need(protocol, "logOctets", bool)
    stats = _need(protocol, "trafficStats")
    for counter in ("outgoingOctetsWireLevel", "outgoingWebSocketMessages",
                    "outgoingOctetsAppLevel", "outgoingOctetsWebSocketLevel",
                    "outgoingWebSocketFrames"):
        _need(stats, counter, int, "trafficStats")
    if _need(protocol, "_perMessageCompress") is not None:
        raise _Missing("_perMessageCompress is set without an extension")
    _need(protocol, "maskServerFrames", bool)
    _need(protocol, "autoFragmentSize", int)
    _need(protocol, "logFrames", bool)
    _need(protocol, "maxMessagePayloadSize", int)
    if _need(protocol, "trackedTimings") is not None:
        raise _Missing("trackedTimings is set without trackTimings")
    if protocol.send_state != WebSocketServerProtocol.SEND_STATE_GROUND:
        raise _Missing("an open, idle protocol is not in SEND_STATE_GROUND")
    import pprint

    import txaio
    from autobahn.websocket import protocol as module

    if _need(module, "pformat", callable, "autobahn.websocket.protocol") is not pprint.pformat:
        from vncproxy.relay.wsprotocol import _pformat_for_debug

        if module.pformat is not _pformat_for_debug:
            raise _Missing("autobahn.websocket.protocol.pformat is not pprint.pformat")
    if txaio.get_global_log_level() not in ("none", "critical", "error", "warn", "info",
                                            "debug", "trace"):
        raise _Missing("txaio.get_global_log_level() is not a level name")


@_checked
def websocket_receive():
    """
    The names the receive fast path of L{vncproxy.relay.wsprotocol} reads, and the state an
    open protocol is in between frames.
    """
    from autobahn.websocket import xormasker

    protocol = open_probe()
    _params(_need(protocol, "_dataReceived", callable), ("data",),
            "WebSocketServerProtocol._dataReceived")
    if _need(protocol, "current_frame") is not None:
        raise _Missing("current_frame is not None between frames")
    if _need(protocol, "inside_message") is not False:
        raise _Missing("inside_message is not False between messages")
    _need(protocol, "data", bytes)
    if _need(protocol, "_perMessageCompress") is not None:
        raise _Missing("_perMessageCompress is set without an extension")
    _need(protocol, "maxFramePayloadSize", int)
    _need(protocol, "maxMessagePayloadSize", int)
    _need(protocol, "requireMaskedClientFrames", bool)
    _need(protocol, "applyMask", bool)
    masker = _need(xormasker, "create_xor_masker", callable, "autobahn.websocket.xormasker")
    if masker(b"\x01\x02\x03\x04", 4).process(b"\x01\x02\x03\x04") != b"\x00" * 4:
        raise _Missing("create_xor_masker(mask, n).process() does not unmask")


@_checked
def websocket_unmask():
    """
    Where Autobahn unmasks with NVX, its compiled module has the functions
    L{vncproxy.relay.nvxmask} calls, and they unmask as RFC 6455 says: pieces of every length
    around the SSE2 block, at every alignment and every mask phase (a masker carried over).
    """
    from vncproxy.relay import nvxmask

    if not nvxmask.applies():
        return
    try:
        import _nvx_xormasker
    except ImportError:
        raise _Missing("Autobahn uses NVX but _nvx_xormasker cannot be imported") from None
    ffi = _need(_nvx_xormasker, "ffi", where="_nvx_xormasker")
    lib = _need(_nvx_xormasker, "lib", where="_nvx_xormasker")
    _need(ffi, "from_buffer", callable, "_nvx_xormasker.ffi")
    _need(ffi, "NULL", where="_nvx_xormasker.ffi")
    for name in ("nvx_xormask_new", "nvx_xormask_process", "nvx_xormask_free"):
        _need(lib, name, callable, "_nvx_xormasker.lib")
    mask = b"\x9d\x4c\x02\xe7"
    data = bytes(range(256)) * 2
    for start in range(4):
        for phase in range(4):
            for n in (0, 1, 3, 15, 16, 17, 33, 100, 300):
                payload = data[start:start + n]
                turned = mask[phase:] + mask[:phase]
                masked = bytes(b ^ turned[i & 3] for i, b in enumerate(payload))
                wire = b"\xff" * start + masked
                if nvxmask.unmask_spans(turned + wire, [(4 + start, n, 0)], None) != payload:
                    raise _Missing("nvx_xormask_process does not unmask in place")
                if n and nvxmask.unmask_spans(wire, [], (len(wire), turned)) != bytes(
                        b ^ turned[i & 3] for i, b in enumerate(wire)):
                    raise _Missing("nvx_xormask_process does not unmask with a given mask")


@_checked
def autobahn_timers():
    """
    Autobahn's factory keeps its timers in C{_batched_timer} (made on txaio's global loop).
    """
    from autobahn.twisted.websocket import WebSocketServerFactory
    from twisted.internet.task import Clock

    factory = WebSocketServerFactory(reactor=Clock())
    _need(_need(factory, "_batched_timer"), "call_later", callable, "_batched_timer")


CHECKS = {
    "lean_dispatch": lean_dispatch,
    "write_through": write_through,
    "zero_copy": zero_copy,
    "websocket_send": websocket_send,
    "websocket_receive": websocket_receive,
    "websocket_unmask": websocket_unmask,
    "autobahn_timers": autobahn_timers,
}

__all__ = ["CHECKS", "NAMES", "open_probe"]
