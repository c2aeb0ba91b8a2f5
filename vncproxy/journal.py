"""
Log lines the systemd journal classifies.

journald reads a service's stdout line by line and takes a leading C{<N>} (sd-daemon(3): a
syslog priority, 0 emergency to 7 debug) as that line's priority; without it every line is 6
(info), and C{journalctl -p warning} finds nothing. journald also stamps each line itself, so a
second timestamp in the text is noise.

L{observer} is a twistd log observer factory (C{twistd --logger vncproxy.journal.observer});
the Debian unit passes it. When stdout is the journal stream systemd set up (C{JOURNAL_STREAM}
names its device and inode), every line gets its event's priority and no timestamp; anywhere
else (a terminal, a file, a pipe) the observer writes twistd's ordinary timestamped lines, so
the same command line is right in and out of systemd.
"""

import os
import sys

from twisted.logger import (
    FileLogObserver,
    LogLevel,
    eventAsText,
    formatEventAsClassicLogText,
)

#: sd-daemon(3) priorities of Twisted's log levels (LOG_CRIT .. LOG_DEBUG).
PRIORITIES = {
    LogLevel.critical: 2,
    LogLevel.error: 3,
    LogLevel.warn: 4,
    LogLevel.info: 6,
    LogLevel.debug: 7,
}


def priority(event):
    """
    The syslog priority of a log event: its level's, or error for an old-style error event
    (C{isError}) that carries no level.
    """
    level = event.get("log_level")
    if level in PRIORITIES:
        return PRIORITIES[level]
    return 3 if event.get("isError") else 6


def format_journal_line(event):
    """
    One event as journald stream lines: each line of the text (a traceback's too) with the
    event's priority prefix, the log system in brackets as twistd writes it, no timestamp.

    @return: the text, or C{""} for an event with nothing to say.
    """
    text = eventAsText(event, includeTraceback=True, includeTimestamp=False,
                       includeSystem=True)
    if not text:
        return ""
    prefix = f"<{priority(event)}>"
    return "".join(f"{prefix}{line}\n" for line in text.splitlines())


def journal_observer(out):
    """
    An observer writing L{format_journal_line} lines to the text file C{out}.
    """
    return FileLogObserver(out, format_journal_line)


def is_journal_stream(out, environ=None):
    """
    Whether the file C{out} is the stream systemd connected to the journal: C{JOURNAL_STREAM}
    is C{"<device>:<inode>"} of that stream (systemd.exec(5)); a child whose stdout was
    redirected elsewhere inherits the variable, hence the comparison.
    """
    environ = os.environ if environ is None else environ
    device, colon, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not colon:
        return False
    try:
        st = os.fstat(out.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (AttributeError, OSError, ValueError):
        return False


def observer(out=None, environ=None):
    """
    twistd's C{--logger} factory: journal lines on the journal's stream, twistd's usual
    timestamped lines elsewhere. Called before twistd redirects C{sys.stdout} into the log.
    """
    out = sys.stdout if out is None else out
    if is_journal_stream(out, environ):
        return journal_observer(out)
    return FileLogObserver(out, formatEventAsClassicLogText)
