"""
Tests for L{vncproxy.vncrelay.VncRelay} on in-memory transports: what reaches QEMU and the
viewer, the counts, view-only input, and the producers that throttle each side.
"""

import struct

from twisted.internet.testing import StringTransport

from vncproxy.relay import FastPaths
from vncproxy.vncrelay import VncRelay

KEY = struct.pack("!BBxxI", 4, 1, 0x61)  # KeyEvent, down, "a"
UPDATE_REQUEST = struct.pack("!BBHHHH", 3, 1, 0, 0, 640, 480)


class Viewer:
    def __init__(self):
        self.network_transport = StringTransport()
        self.sent = b""

    def send(self, data):
        self.sent += data


def relay(read_only=False):
    qemu, viewer, events = StringTransport(), Viewer(), []
    r = VncRelay(FastPaths.off(), qemu, viewer, read_only, lambda: events.append("active"),
                 lambda detail: events.append(("broken", detail)))
    return r, qemu, viewer, events


def test_bytes_go_both_ways_counted():
    r, qemu, viewer, events = relay()
    assert r.from_viewer(b"leftover", prefix=b"\x01")
    assert qemu.value() == b"\x01leftover"
    r.start(b"server-init")
    r.to_viewer(b"update")
    assert viewer.sent == b"server-initupdate"
    assert (r.bytes_to_viewer, r.bytes_from_viewer) == (17, 8)  # our ClientInit not counted
    assert events == ["active"] and r.mode == "interactive"


def test_a_view_only_viewer_input_is_dropped_and_screen_requests_pass():
    r, qemu, _, events = relay(read_only=True)
    assert r.from_viewer(KEY + UPDATE_REQUEST)
    assert qemu.value() == UPDATE_REQUEST
    assert r.input_dropped == 1 and r.mode == "read-only"
    assert r.bytes_from_viewer == len(KEY + UPDATE_REQUEST)


def test_an_unreadable_view_only_message_breaks_the_relay_and_nothing_goes_on():
    r, qemu, _, events = relay(read_only=True)
    assert not r.from_viewer(b"\x63junk", prefix=b"\x01")
    assert qemu.value() == b""
    assert events and events[0][0] == "broken"


def test_each_side_throttles_the_other_until_stopped():
    r, qemu, viewer, _ = relay()
    r.start(b"")
    assert qemu.producer is not None and viewer.network_transport.producer is not None
    qemu.producer.pauseProducing()  # QEMU's buffer is full: the viewer's reading pauses
    assert viewer.network_transport.producerState == "paused"
    viewer.network_transport.producer.pauseProducing()
    assert qemu.producerState == "paused"
    r.stop()
    assert qemu.producer is None and viewer.network_transport.producer is None
