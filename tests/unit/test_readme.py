"""
The API reference's close-code table lists exactly the codes the service uses, with their reasons.
"""

import pathlib
import re

from vncproxy.closecodes import REASONS

README = pathlib.Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_close_code_table_matches_the_code():
    """Every close code and its reason appear in the API reference's table, and no other."""
    rows = re.findall(r"^\| (4\d{3}) \| ([^|]+?) \|", README.read_text(), re.M)
    assert {int(code): reason for code, reason in rows} == {int(c): r for c, r in REASONS.items()}
