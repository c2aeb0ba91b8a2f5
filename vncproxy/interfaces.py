"""
The seams of consoleproxy: every boundary with the outside world is one of these interfaces,
with a real implementation and a fake that face the same contract tests.
"""

from zope.interface import Attribute, Interface


class IHypervisor(Interface):
    """
    Finds domains and their consoles, and reports their lifecycle.

    Every query returns a L{Deferred} that fires on the reactor thread; blocking work
    (libvirt calls) never runs on the reactor thread.
    """

    def describe(instance):
        """
        Look a domain up by UUID or by name and read its console details.

        @param instance: a domain UUID (any case, with dashes) or a domain name.
        @type instance: L{str}
        @return: a L{Deferred} firing with a L{vncproxy.hypervisor.DomainInfo}, or failing with
            L{vncproxy.hypervisor.NoSuchInstance} when there is no such domain, or with
            L{vncproxy.hypervisor.HypervisorError} when the hypervisor cannot be asked.
        """

    def list_active():
        """
        Describe every active domain.

        @return: a L{Deferred} firing with a L{list} of L{vncproxy.hypervisor.DomainInfo}.
        """

    def list_all():
        """
        Describe every domain, active or not (inactive ones have no console details).

        @return: a L{Deferred} firing with a L{list} of L{vncproxy.hypervisor.DomainInfo}, or
            failing with L{vncproxy.hypervisor.HypervisorError}.
        """

    def subscribe(listener):
        """
        Call C{listener(event)} with a L{vncproxy.hypervisor.LifecycleEvent} for every lifecycle
        event of any domain, on the reactor thread, from now on; and with a
        L{vncproxy.hypervisor.LifecycleKind.RECONNECTED} event (empty C{uuid} and C{name}) each
        time the connection to the hypervisor is open again after it was lost, since events of
        the time in between were missed.

        @return: a no-argument callable that unsubscribes.
        """

    def open_console(instance, on_data, on_closed, force=False):
        """
        Become the reader of a running domain's serial console (its first serial or console
        device).

        Output reaches C{on_data(bytes)} on the reactor thread, in order, for as long as the
        console stays open; C{on_closed(reason)} is called once, with a short text, when it ends
        without L{IConsoleSource.close} (the domain stopped, another client took the console
        over, the connection to the hypervisor failed).

        @param force: take the console over from another client that holds it; without it,
            opening fails while someone else holds it.
        @return: a L{Deferred} firing with an L{IConsoleSource}, or failing with
            L{vncproxy.hypervisor.NoSuchInstance}, or with
            L{vncproxy.hypervisor.ConsoleUnavailable} (not running, no serial console, held by
            another client, not supported by the driver), or with
            L{vncproxy.hypervisor.HypervisorError}.
        """

    def send_keys(instance, keycodes, hold_ms):
        """
        Press keys on a running domain's keyboard together, hold them C{hold_ms} milliseconds,
        and release them (libvirt's C{virDomainSendKey}).

        @param keycodes: Linux input event codes (C{KEY_*} of C{linux/input-event-codes.h}),
            1 to 16 of them, pressed in this order.
        @return: a L{Deferred} firing with C{None} once the hypervisor accepted them, or failing
            with L{vncproxy.hypervisor.NoSuchInstance},
            L{vncproxy.hypervisor.InstanceNotRunning} or L{vncproxy.hypervisor.HypervisorError}.
        """

    def open_graphics(instance):
        """
        A socket connected to a running domain's VNC server, already authenticated
        (libvirt's C{virDomainOpenGraphicsFD} with C{VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH}): the
        server offers security type None on it.

        @return: a L{Deferred} firing with the file descriptor of a connected UNIX stream
            socket (the caller owns and closes it), or failing with
            L{vncproxy.hypervisor.NoSuchInstance}, L{vncproxy.hypervisor.InstanceNotRunning},
            L{vncproxy.hypervisor.GraphicsUnavailable} (the driver or the domain cannot) or
            L{vncproxy.hypervisor.HypervisorError}.
        """

    def inject_nmi(instance):
        """
        Send a non-maskable interrupt to a running domain (libvirt's C{virDomainInjectNMI}).

        @return: a L{Deferred} firing with C{None}, or failing as L{send_keys} does.
        """

    def ping():
        """
        Check that the hypervisor answers.

        @return: a L{Deferred} firing with C{True} when it does, C{False} otherwise (never fails).
        """


class ITokenStore(Interface):
    """
    Mints and redeems short-lived, single-use console access tokens.
    """

    ttl = Attribute("How long a token stays valid after it is minted, in seconds.")

    def mint(instance_uuid, console_type, force=False, caller=None):
        """
        Create a token bound to one instance and one console type.

        @return: a tuple C{(secret, grant)}: the token (returned to the caller once, never
            stored) and the L{vncproxy.tokens.Grant} it stands for.
        """

    def consume(secret, now=None):
        """
        Redeem a token: the first call with a valid, unexpired token returns its grant and
        makes the token unusable.

        @raise vncproxy.tokens.TokenRejected: when the token is unknown, used or expired.
        """


class IConsoleSource(Interface):
    """
    One domain's serial console as a byte stream, with one reader: the service.

    A source is created already reading (see L{IHypervisor.open_console} and
    L{vncproxy.serial.pty.PtySource}): output goes to the C{on_data} callable it was opened
    with, on the reactor thread, and is never paused for a consumer (the guest must not block).
    C{on_closed(reason)} is called once when the console ends by itself.
    """

    def write(data):
        """
        Send bytes to the guest, in order. Never blocks: bytes wait in a buffer until the
        console takes them.
        """

    def registerProducer(producer, streaming):
        """
        Throttle the input: C{producer.pauseProducing()} while the buffer toward the guest is
        full, C{resumeProducing()} once it drained. C{stopProducing} is never called. Only
        streaming (push) producers are supported.
        """

    def unregisterProducer():
        """
        Stop throttling the registered producer.
        """

    def close():
        """
        Release the console (stop reading; pending input may be dropped). C{on_closed} is not
        called afterwards. Calling it twice is harmless.
        """


class IConsoleSink(Interface):
    """
    Where a console session's output is written and whose input it can hold back: the shape
    shared by an L{IViewer} (a session's client end) and an L{IHubSink} (a serial hub's
    consumer).
    """

    network_transport = Attribute(
        "The IConsumer the output goes through: producers registered with it are paused while "
        "its buffer is full, so a slow end throttles what feeds it (None: it takes everything "
        "at once).")

    def pause_reading():
        """
        Read no more input from this end until L{resume_reading} (its transport is paused).
        """

    def resume_reading():
        """
        Read input from this end again.
        """


class IViewer(IConsoleSink):
    """
    The client end of one console session, as the session drives it: a WebSocket
    (L{vncproxy.web.websocket.WebSocketViewer}, and LXD's console channel) or a raw TCP
    connection (L{vncproxy.xvpvnc.TcpViewer}). L{vncproxy.vnc.VncSession} relays RFB bytes to
    it; a serial session writes an L{ISerialViewer}.
    """

    listener = Attribute(
        "The name of the listener it came in on, as the session inventory lists it "
        "(websocket, lxd, xvpvnc, vnc).")

    def send(data):
        """
        Write C{data} (bytes) to the client, in order; nothing once it is closed.
        """

    def close(code, reason):
        """
        End the connection with L{vncproxy.closecodes.CloseCode} C{code} and the text
        C{reason} (a WebSocket close frame; raw TCP has no close codes and just closes).
        """

    def splice_ready():
        """
        Whether bytes written around this object (L{vncproxy.relay.zerocopy}) may go now.
        """

    def splice_header(n):
        """
        The bytes that go before C{n} bytes written around this object (a frame header, or
        nothing).
        """


class ISerialViewer(IViewer):
    """
    The client end of a serial session (L{vncproxy.serial.session.SerialSession}).
    """

    def send_chunk(chunk):
        """
        Write a L{vncproxy.serial.viewer.Chunk} of console output; C{chunk.cache} may keep its
        encoded form for the other viewers of the same chunk.
        """


class IHubSink(IConsoleSink):
    """
    What a L{vncproxy.serial.hub.SerialHub} delivers one viewer's output to: a serial session,
    or a console-log follower (L{vncproxy.web.logfollow.LogFollower}).
    """

    def send(chunk):
        """
        Deliver a L{vncproxy.serial.viewer.Chunk} of console output.
        """

    def close(code, detail=None):
        """
        The hub ended this viewer (it has already forgotten it) with
        L{vncproxy.closecodes.CloseCode} C{code} and C{detail}, the text after the code's
        reason (e.g. how far behind a slow viewer was).
        """
