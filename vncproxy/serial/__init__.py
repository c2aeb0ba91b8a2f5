"""
Serial consoles: continuous capture of every running domain's serial PTY into a rotated log,
and a hub per instance that fans the output out to viewers and takes one viewer's input.

    pty.py       PtySource: the PTY read directly (root only)
    capture.py   ConsoleLog: size-rotated per-instance log files
    hub.py       SerialHub: one source, N viewers, one interactive writer, scrollback
    viewer.py    Viewer: one viewer's queue, its flow control, the slow-viewer rule
    manager.py   SerialManager: which domains are captured, from what, and when
    domaincapture.py  DomainCapture: one domain's console kept open, reopened, its gaps marked
    session.py   SerialSession: one WebSocket viewer of a hub
"""
