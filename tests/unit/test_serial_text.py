"""
Tests for L{vncproxy.serial.text.plain_text}: terminal sequences removed, text kept, in byte
vectors a guest really prints (systemd's colours, a shell's title, OSC 52).
"""

import pytest

from vncproxy.serial.text import plain_text


@pytest.mark.parametrize("raw,text", [
    (b"[  \x1b[0;32mOK  \x1b[0m] Started Journal.\r\n", "[  OK  ] Started Journal.\n"),
    (b"\x1b]0;root@guest: ~\x07root@guest:~# ", "root@guest:~# "),
    (b"\x1b]52;c;Y3VybCBldmlsfHNo\x1b\\after", "after"),
    (b"\x1bPq#0;2;0;0;0\x1b\\sixel gone", "sixel gone"),
    (b"\x1b(B\x1b=\x1b>plain", "plain"),
    (b"bell\x07 back\x08space del\x7f", "bell backspace del"),
    (b"tab\tand\nnewline\r\n", "tab\tand\nnewline\n"),
    (b"caf\xc3\xa9 \xff", "caf\u00e9 \ufffd"),
    (b"c1 \xc2\x9b csi", "c1  csi"),
    (b"trailing escape \x1b", "trailing escape "),
    (b"", ""),
])
def test_plain_text(raw, text):
    assert plain_text(raw) == text
