"""
A serial console log as plain text (C{GET .../console_log?format=text}): terminal control
sequences removed, so that reading a log in a terminal or a browser cannot be driven by what
the guest printed (cursor moves, colour, window titles, OSC 52 clipboard writes, ...).
"""

import re

__all__ = ["plain_text"]

_SEQUENCES = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"                 # CSI ... final (colours, cursor)
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"     # OSC ... BEL or ST (titles, clipboard)
    rb"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"          # DCS, SOS, PM, APC ... ST
    rb"|\x1b[ -/]*[0-~]"                        # other escape sequences (charsets, keypad)
    rb"|\x1b"                                   # a lone ESC at the end
)
#: C0 controls except tab and newline, and DEL.
_CONTROLS = {c: None for c in range(32) if c not in (9, 10)}
_CONTROLS[127] = None


def plain_text(data):
    """
    @param data: the raw log bytes.
    @return: the text: UTF-8 (invalid bytes replaced), escape sequences and control characters
        removed (C1 controls too), CR LF turned into LF, tabs and newlines kept.
    """
    text = _SEQUENCES.sub(b"", data).replace(b"\r\n", b"\n")
    decoded = text.decode("utf-8", errors="replace").translate(_CONTROLS)
    return "".join(ch for ch in decoded if not 0x80 <= ord(ch) <= 0x9F)
