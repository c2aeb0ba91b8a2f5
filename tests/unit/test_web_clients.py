"""
The web clients: the noVNC version lookup and the serial page's words for close codes (their
Content-Security-Policies: test_csp.py).
"""

import gzip
import json

from vncproxy.web.clients import novnc_version


def test_novnc_version_from_package_json(tmp_path):
    """An upstream or npm copy names its version in package.json."""
    (tmp_path / "package.json").write_text(json.dumps({"name": "@novnc/novnc", "version": "1.6.0"}))
    assert novnc_version(tmp_path, changelog=tmp_path / "none.gz") == "1.6.0"


def test_novnc_version_from_debians_changelog(tmp_path):
    """Debian's copy has no package.json: the version comes from its changelog, epoch dropped."""
    changelog = tmp_path / "changelog.Debian.gz"
    with gzip.open(changelog, "wt") as f:
        f.write("novnc (1:1.3.0-1) unstable; urgency=medium\n\n  * stuff\n")
    assert novnc_version(tmp_path, changelog=changelog) == "1.3.0"


def test_novnc_version_unknown(tmp_path):
    """Neither source: no version (the page then gets 404 for package.json)."""
    (tmp_path / "package.json").write_text("{not json")
    assert novnc_version(tmp_path, changelog=tmp_path / "none.gz") is None


def test_serial_page_has_words_for_every_close_code():
    """Each of the service's close codes has a sentence in the serial page's script."""
    from vncproxy.closecodes import CloseCode
    from vncproxy.web.clients import STATIC_DIR

    script = (STATIC_DIR / "serial" / "serial.js").read_text()
    table = script[script.index("const CLOSE_MESSAGES"):script.index("};")]
    for code in CloseCode:
        assert f"\n    {int(code)}: '" in table, code
