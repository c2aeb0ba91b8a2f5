"""
vncproxy.journal: lines journald classifies by priority, without a second timestamp, and only
on the journal's own stream.
"""

import io
import os
import tempfile

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from vncproxy import journal


def _emit(observer, level, text, **fields):
    publisher = LogPublisher(observer)
    Logger(namespace="consoleproxy.test", observer=publisher).emit(level, text, **fields)


class JournalLineTests(SynchronousTestCase):
    def lines(self, level, text, **fields):
        out = io.StringIO()
        _emit(journal.journal_observer(out), level, text, **fields)
        return out.getvalue()

    def test_each_level_gets_its_syslog_priority(self):
        for level, prefix in [(LogLevel.debug, "<7>"), (LogLevel.info, "<6>"),
                              (LogLevel.warn, "<4>"), (LogLevel.error, "<3>"),
                              (LogLevel.critical, "<2>")]:
            self.assertEqual(self.lines(level, "guest {name} gone", name="tiny"),
                             f"{prefix}[consoleproxy.test#{level.name}] guest tiny gone\n")

    def test_no_timestamp(self):
        self.assertEqual(self.lines(LogLevel.warn, "x"), "<4>[consoleproxy.test#warn] x\n")

    def test_every_line_of_a_traceback_carries_the_priority(self):
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        out = io.StringIO()
        publisher = LogPublisher(journal.journal_observer(out))
        Logger(namespace="t", observer=publisher).failure("request failed", failure,
                                                          level=LogLevel.error)
        lines = out.getvalue().splitlines()
        self.assertGreater(len(lines), 3)
        self.assertTrue(all(line.startswith("<3>") for line in lines), lines)
        self.assertIn("ZeroDivisionError", lines[-1])

    def test_old_style_error_without_level_is_an_error(self):
        self.assertEqual(journal.priority({"isError": 1}), 3)
        self.assertEqual(journal.priority({}), 6)

    def test_event_with_nothing_to_say_writes_nothing(self):
        self.assertEqual(journal.format_journal_line({"log_level": LogLevel.info}), "")


class StreamDetectionTests(SynchronousTestCase):
    def setUp(self):
        self.file = tempfile.TemporaryFile("w+")
        self.addCleanup(self.file.close)
        st = os.fstat(self.file.fileno())
        self.stream = f"{st.st_dev}:{st.st_ino}"

    def test_journal_stream_gets_journal_lines(self):
        observer = journal.observer(self.file, {"JOURNAL_STREAM": self.stream})
        _emit(observer, LogLevel.warn, "careful")
        self.file.seek(0)
        self.assertEqual(self.file.read(), "<4>[consoleproxy.test#warn] careful\n")

    def test_other_stream_gets_classic_timestamped_lines(self):
        # e.g. a child of the service whose stdout went elsewhere inherits JOURNAL_STREAM
        for environ in [{}, {"JOURNAL_STREAM": "1:2"}, {"JOURNAL_STREAM": "junk"}]:
            out = io.StringIO()
            _emit(journal.observer(out, environ), LogLevel.warn, "careful")
            text = out.getvalue()
            self.assertFalse(text.startswith("<"), (environ, text))
            self.assertIn("[consoleproxy.test#warn] careful", text)
            self.assertRegex(text, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
