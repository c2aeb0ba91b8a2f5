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


def test_region_guide_shows_the_haproxy_configuration_the_region_test_runs():
    """docs/region.md includes etc/haproxy/region.cfg verbatim (the region e2e test runs the
    file), so the guide and the tested configuration cannot drift apart."""
    docs = README.parent
    guide = (docs / "region.md").read_text()
    shown = re.search(r"<!-- begin etc/haproxy/region.cfg -->\n```haproxy\n(.*?)```\n"
                      r"<!-- end etc/haproxy/region.cfg -->", guide, re.S)
    assert shown, "docs/region.md lost its copy of etc/haproxy/region.cfg"
    assert shown.group(1) == (docs.parent / "etc" / "haproxy" / "region.cfg").read_text()
