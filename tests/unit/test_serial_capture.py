"""
ConsoleLog: size rotation, bounded disk, tail across files, clear, persistence across
instances of the object (a restart of the service), failures that never raise.
"""

import os
import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from vncproxy.serial.capture import ConsoleLog

NAME = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"


def test_appends_and_reads_back(tmp_path):
    """Written bytes come back from tail(), all of them or the last N."""
    log = ConsoleLog(str(tmp_path), NAME, 1024, 2)
    log.write(b"hello ")
    log.write(b"world\r\n")
    assert log.tail() == b"hello world\r\n"
    assert log.tail(7) == b"world\r\n"
    assert log.tail(0) == b""
    assert log.tail(10_000) == b"hello world\r\n"


def test_rotates_by_size_and_keeps_a_bounded_number_of_files(tmp_path):
    """No file exceeds max_bytes, at most max_files rotated files exist, and tail() spans them."""
    log = ConsoleLog(str(tmp_path), NAME, 100, 2)
    data = bytes(range(256)) * 4  # 1024 bytes
    log.write(data)
    files = sorted(os.listdir(tmp_path))
    assert files == [f"{NAME}.log", f"{NAME}.log.1", f"{NAME}.log.2"]
    assert all(os.path.getsize(tmp_path / f) <= 100 for f in files)
    assert log.size() <= 300
    assert data.endswith(log.tail())
    assert log.tail(150) == data[-150:]


def test_no_rotated_files_when_max_files_is_zero(tmp_path):
    """max_files = 0 keeps only the current file, restarted when full."""
    log = ConsoleLog(str(tmp_path), NAME, 100, 0)
    log.write(b"a" * 250)
    assert os.listdir(tmp_path) == [f"{NAME}.log"]
    assert log.tail() == b"a" * 50


def test_survives_a_restart_of_the_service(tmp_path):
    """A new ConsoleLog on the same files (the service restarted) sees and appends to the old
    output, and keeps rotating from where the old one was."""
    first = ConsoleLog(str(tmp_path), NAME, 100, 3)
    first.write(b"before restart\r\n" * 8)
    first.close()
    second = ConsoleLog(str(tmp_path), NAME, 100, 3)
    assert second.tail() == b"before restart\r\n" * 8
    second.write(b"after\r\n")
    assert second.tail() == b"before restart\r\n" * 8 + b"after\r\n"
    assert os.path.getsize(tmp_path / f"{NAME}.log") <= 100


def test_clear_empties_every_file(tmp_path):
    """clear() removes rotated files and empties the current one; writing goes on after it."""
    log = ConsoleLog(str(tmp_path), NAME, 100, 2)
    log.write(b"x" * 250)
    log.clear()
    assert log.tail() == b""
    assert os.listdir(tmp_path) == [f"{NAME}.log"]
    log.write(b"fresh")
    assert log.tail() == b"fresh"


def test_files_are_private(tmp_path):
    """The log directory is 0700 and its files 0600: a console can show secrets."""
    directory = tmp_path / "serial"
    log = ConsoleLog(str(directory), NAME, 100, 2)
    log.write(b"x" * 150)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for name in os.listdir(directory):
        assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600


def test_no_file_before_the_first_byte(tmp_path):
    """Nothing is created until there is output; tail() of nothing is empty."""
    log = ConsoleLog(str(tmp_path / "serial"), NAME, 100, 2)
    assert log.tail() == b"" and log.size() == 0
    assert not (tmp_path / "serial").exists()


def test_a_failing_disk_never_raises(tmp_path):
    """When the directory cannot be made, write() logs and returns; it works once the disk does."""
    blocker = tmp_path / "serial"
    blocker.write_bytes(b"a file where the directory should be")
    log = ConsoleLog(str(blocker), NAME, 100, 2)
    log.write(b"lost")
    log.write(b"lost too")
    blocker.unlink()
    log.write(b"kept")
    assert log.tail() == b"kept"


def test_leftover_rotations_from_a_larger_setting_are_read_and_cleared(tmp_path):
    """Files beyond max_files (log_files was lowered) still count for tail() and clear()."""
    big = ConsoleLog(str(tmp_path), NAME, 10, 4)
    big.write(b"0123456789" * 5)
    big.close()
    small = ConsoleLog(str(tmp_path), NAME, 10, 1)
    assert small.tail() == b"0123456789" * 5
    small.clear()
    assert small.tail() == b""


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(min_size=0, max_size=300), max_size=30),
       max_bytes=st.integers(1, 200), max_files=st.integers(0, 3))
def test_log_is_always_the_end_of_what_was_written(tmp_path_factory, chunks, max_bytes,
                                                   max_files):
    """Whatever the chunking: every file fits max_bytes, there are at most max_files + 1, and
    the whole log is exactly the last bytes written (at least a full file's worth when that
    much was written)."""
    directory = tmp_path_factory.mktemp("log")
    log = ConsoleLog(str(directory), NAME, max_bytes, max_files)
    for chunk in chunks:
        log.write(chunk)
    written = b"".join(chunks)
    kept = log.tail()
    assert written.endswith(kept)
    assert len(kept) >= min(len(written), max_bytes * max_files + 1) or len(written) == 0
    files = os.listdir(directory)
    assert len(files) <= max_files + 1
    assert all(os.path.getsize(directory / f) <= max_bytes for f in files)
    for n in (1, max_bytes, len(written)):
        assert log.tail(n) == (kept[-n:] if n else b"")
