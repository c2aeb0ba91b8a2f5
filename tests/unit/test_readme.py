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


def layout_rows():
    """The README's Layout table: C{{row: module file names cited}}, C{""} for top-level
    modules (named in the first column), C{"pkg/"} for a package's row (named anywhere in it)."""
    text = (README.parents[1] / "README.md").read_text()
    table = re.search(r"^## Layout\n(.*?)\n\n(?!\|)", text, re.S | re.M)
    assert table, "README.md lost its Layout section"
    rows = {}
    for first, owns in re.findall(r"^\| (.+?) \| (.+) \|$", table.group(1), re.M):
        if first.endswith("/`"):
            rows.setdefault(first.strip("`"), set()).update(re.findall(r"`(\w+\.py)`", owns))
        else:
            rows.setdefault("", set()).update(re.findall(r"`(\w+\.py)`", first))
    return rows


def test_readme_layout_lists_every_module_and_no_other():
    """Every module under vncproxy/ has a line in the README's Layout table (top-level modules
    in the first column, a package's modules in its row), and every module cited exists."""
    package = README.parents[1] / "vncproxy"
    on_disk = {}
    for path in package.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        rel = path.relative_to(package)
        key = f"{rel.parent}/" if rel.parent != pathlib.Path(".") else ""
        on_disk.setdefault(key, set()).add(path.name)
    rows = layout_rows()
    for key in sorted(set(rows) | set(on_disk)):
        assert rows.get(key) == on_disk.get(key), f"Layout row {key or 'top level'!r}"
