"""
L{VncRelay}: a VNC session's bytes, both ways, from our ClientInit to QEMU until the session
ends: counted, a view-only viewer's input dropped (L{ViewOnlyFilter}), each transport
registered as the other's producer so that a slow side throttles the fast one instead of
filling memory, and the relay's fast paths (L{vncproxy.relay.start}: write-through, zero-copy).

The L{vncproxy.vnc.VncSession} owns it and decides when bytes flow: QEMU's ServerInit is
checked by the session before L{VncRelay.start} passes anything to the viewer.
"""

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from vncproxy import relay
from vncproxy.rfb.clientmsgs import ClientProtocolError, ViewOnlyFilter


@implementer(IPushProducer)
class _Throttle:
    """
    Lets one side's transport throttle the other's reading, and nothing more: when a
    transport's connection is lost, Twisted calls C{stopProducing} on its producer, which on a
    raw transport would hang up the other side before the session could tell its viewer why.
    """

    def __init__(self, transport):
        self._transport = transport

    def pauseProducing(self):
        self._transport.pauseProducing()

    def resumeProducing(self):
        self._transport.resumeProducing()

    def stopProducing(self):
        pass


class VncRelay:
    """
    @param fast_paths: the L{vncproxy.relay.FastPaths} that are on.
    @param qemu: QEMU's transport (past its handshake).
    @param viewer: the viewer adapter (see L{vncproxy.vnc}).
    @param read_only: a view-only session: the viewer's input never reaches QEMU.
    @param activity: called at each byte moved (the session's idle timer).
    @param broken: C{broken(detail)} when a view-only viewer sent what cannot be read (the
        session ends with a protocol error); nothing more goes to QEMU from this call.
    """

    def __init__(self, fast_paths, qemu, viewer, read_only, activity, broken):
        self._fast = fast_paths
        self._qemu = qemu
        self._viewer = viewer
        self._view_only = ViewOnlyFilter() if read_only else None
        self._activity = activity
        self._broken = broken
        self._splice = None
        self._throttled = False
        self.bytes_to_viewer = 0
        self.bytes_from_viewer = 0
        self.bytes_spliced = 0  # the part of bytes_to_viewer that went by splice (zerocopy)

    @property
    def mode(self):
        return "read-only" if self._view_only is not None else "interactive"

    @property
    def input_dropped(self):
        return self._view_only.dropped_total if self._view_only is not None else 0

    def from_viewer(self, data, prefix=b""):
        """
        The viewer's bytes toward QEMU (after C{prefix}, our own bytes: the ClientInit).

        @return: C{False} when the viewer broke the protocol (C{broken} was called).
        """
        self.bytes_from_viewer += len(data)
        if self._view_only is not None and data:
            try:
                data = self._view_only.receive(data)
            except ClientProtocolError as e:
                self._broken(str(e))
                return False
        data = prefix + data if prefix else data
        if data:
            self._qemu.write(data)
        return True

    def to_viewer(self, data):
        """
        QEMU's bytes once relaying.
        """
        self._activity()
        self.bytes_to_viewer += len(data)
        self._viewer.send(data)

    def start(self, pending):
        """
        Relay from now on, starting with C{pending} (QEMU's checked ServerInit and what came
        with it) toward the viewer.
        """
        self.bytes_to_viewer += len(pending)
        self._viewer.send(pending)
        self._splice = relay.start(self._fast, self._qemu, self._viewer, self._spliced)
        self._viewer.network_transport.registerProducer(_Throttle(self._qemu), True)
        self._qemu.registerProducer(_Throttle(self._viewer.network_transport), True)
        self._throttled = True

    def stop(self):
        """
        The session ended: no splice, no producers any more (the transports are being closed).
        """
        if self._splice is not None:
            self._splice.uninstall()
            self._splice = None
        if self._throttled:
            self._throttled = False
            for transport in (self._viewer.network_transport, self._qemu):
                if transport is not None and getattr(transport, "producer", None) is not None:
                    transport.unregisterProducer()

    def _spliced(self, n):
        self._activity()
        self.bytes_to_viewer += n
        self.bytes_spliced += n


__all__ = ["VncRelay"]
