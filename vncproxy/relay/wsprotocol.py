"""
The WebSocket fast paths, as a mixin for the console's Autobahn server protocol. Each is on
only when its switch (L{vncproxy.relay.FastPaths}, on the factory) is, which it is only after
its names passed L{vncproxy.relay._assumptions}.

C{websocket_send}, frames: the session's binary messages to the viewer go out as one unmasked
binary frame whose header we write ourselves (L{websocket_header}, RFC 6455 section 5.2), with
Autobahn's traffic counters kept as its C{sendMessage} and C{sendFrame} keep them, instead of
through those two (type assertions, option look-ups, a frame built from parts: about a tenth of
the service's CPU per keystroke round trip). Only while Autobahn would send the same bytes:
the connection open, nothing of Autobahn's queued or half sent (a fragmented message begun),
and, fixed when it opens, no compression, no masking of server frames, no automatic
fragmentation, no frame or octet logging, no timing; and only unfragmented, unsynchronised
messages within the message size limit. Anything else is Autobahn's (the test of framework
assumptions holds the digests of the two functions this mirrors).

C{websocket_send}, debug lines: Autobahn's C{dataReceived} and C{sendData} each log a debug line whose
arguments (C{hltype}, C{hlval}: qualified names, string styling) are built before the logger
can discard them, on every read and every write (about 25 us per keystroke round trip). The
relay's writes skip those lines; anything unusual (Autobahn's send queue, sync or chopped
sends, octet logging, a connection not open) still goes through Autobahn's C{sendData}. Copied
from the fast branch of C{WebSocketProtocol.sendData} (Autobahn 22.7 to 26.11; the test of
framework assumptions holds the digest of the code this mirrors).

The same switch covers one set-up cost: Autobahn's C{_connectionMade} pretty-prints its 30
options (C{pprint.pformat}) for a debug line on every connection, about a fifth of its CPU per
upgrade; L{quiet_debug_lines} makes that module's C{pformat} format only while txaio's log
level is debug (else it gives an empty string, which only such debug lines and the
C{trackTimings} report would have shown).

C{websocket_receive}: while the connection is open and Autobahn is between messages, the
viewer's bytes go to a L{BinaryFrameReader} first; the payloads of the binary frames one read
brought go to C{onMessageFrameData} joined (so to QEMU in one write, not one per frame),
without Autobahn's per-frame work (a masker object made through cffi, about 25 calls). The first frame the reader
does not take, and everything after it, goes to Autobahn, which keeps the connection until it
is between messages again.
"""

import pprint

import txaio
from autobahn.websocket import protocol as _autobahn_protocol
from autobahn.websocket.protocol import WebSocketProtocol

from vncproxy.relay import nvxmask
from vncproxy.relay.wsframes import BinaryFrameReader, unmask_spans, websocket_header

_OPEN = WebSocketProtocol.STATE_OPEN
_GROUND = WebSocketProtocol.SEND_STATE_GROUND


def _pformat_for_debug(value, *args, **kw):
    if txaio.get_global_log_level() in ("debug", "trace"):
        return pprint.pformat(value, *args, **kw)
    return ""


def quiet_debug_lines():
    """
    Make Autobahn's protocol module pretty-print only for debug logging (see above).
    """
    _autobahn_protocol.pformat = _pformat_for_debug


def _frame_limit(protocol):
    limits = [n for n in (protocol.maxFramePayloadSize, protocol.maxMessagePayloadSize) if n]
    return min(limits) if limits else 0


def _one_plain_frame(protocol):
    """
    Whether Autobahn would send each binary message of C{protocol} (just opened) as one plain
    frame: the options that could make it otherwise are fixed for the connection by now.
    """
    return (protocol._perMessageCompress is None and not protocol.maskServerFrames
            and not protocol.autoFragmentSize and not protocol.logFrames
            and not protocol.logOctets and protocol.trackedTimings is None)


class FastWebSocketMixin:
    """
    Mix in before Autobahn's C{WebSocketServerProtocol}; the factory carries C{fast_paths}.
    """

    _frames = None
    _own_frames = False

    def onOpen(self):
        # (Autobahn's onOpen is an empty hook; the console's protocol calls this one first.)
        fast = self.factory.fast_paths
        if fast.websocket_receive and self._perMessageCompress is None:
            self._frames = BinaryFrameReader(
                _frame_limit(self),
                nvxmask.unmask_spans if fast.websocket_unmask else unmask_spans)
        self._own_frames = fast.websocket_send and _one_plain_frame(self)
        self._own_limit = self.maxMessagePayloadSize or (1 << 63) - 1

    def dataReceived(self, data):
        frames = self._frames
        if frames is not None and self.state == _OPEN and (
                frames.inside_frame or (self.current_frame is None and not self.inside_message
                                        and not self.data)):
            payload, data = frames.receive(data)
            if payload:
                # the console is a byte stream: what one read brought goes on in one write
                self.onMessageFrameData(payload)
            if data is None:
                return
        if self.factory.fast_paths.websocket_send:
            self._dataReceived(data)
        else:
            super().dataReceived(data)

    def sendMessage(self, payload, isBinary=False, fragmentSize=None, sync=False,
                    doNotCompress=False):
        if not (self._own_frames and isBinary and fragmentSize is None and not sync
                and self.state == _OPEN and self.send_state == _GROUND and not self.send_queue
                and type(payload) is bytes and len(payload) <= self._own_limit):
            super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)
            return
        n = len(payload)
        frame = websocket_header(n) + payload
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingOctetsAppLevel += n
        stats.outgoingOctetsWebSocketLevel += n
        stats.outgoingWebSocketFrames += 1
        stats.outgoingOctetsWireLevel += len(frame)
        self.transport.write(frame)

    def sendData(self, data, sync=False, chopsize=None):
        if (not self.factory.fast_paths.websocket_send or sync or chopsize or self.send_queue
                or self.logOctets or self.state != _OPEN):
            super().sendData(data, sync, chopsize)
            return
        self.transport.write(data)
        self.trafficStats.outgoingOctetsWireLevel += len(data)


__all__ = ["FastWebSocketMixin", "quiet_debug_lines"]
