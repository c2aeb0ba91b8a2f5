"""
The LXD console API, as C{lxc console} and pylxd speak it (issue 16).

    envelope     LXD's response envelopes (sync, async, error: the C{lxd} error family), the
                 server and instance documents
    operations   operations: their two single-use secrets, states and events
    trust        who may call: trusted client certificates (the C{ssl:} listener), the UNIX
                 socket's owner, group and mode (the C{unix:} listener), our API keys
    rest         the routes (C{/1.0}, instances, console, operations, events)
    console      a console operation: its channels admitted (L{vncproxy.admission}) as one
                 interactive serial session (L{vncproxy.serial.session.SerialSession})
    channels     the operation and event WebSockets (Autobahn)
"""
