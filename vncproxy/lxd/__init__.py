"""
The LXD console API, as C{lxc console} and pylxd speak it (issue 16).

    envelope     LXD's response envelopes (sync, async, error), the server and instance
                 documents
    operations   console operations: their two single-use secrets, states and events
    trust        who may call: trusted client certificates (the C{ssl:} listener), the UNIX
                 socket's owner, group and mode (the C{unix:} listener)
    rest         the routes (C{/1.0}, instances, console, operations, events)
    channels     the operation and event WebSockets; the console channel is a viewer of the
                 serial hub like any other (L{vncproxy.serial.session.SerialSession})
"""
