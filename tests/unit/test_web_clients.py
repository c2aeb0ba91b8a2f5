"""
The web clients: the noVNC version lookup, the serial page's words for close codes, the pages'
actions menu and their lack of inline code (their
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


def test_the_actions_menu_offers_only_actions_the_service_takes():
    """Every item of the pages' "Send…" menu (static/console/actions.js) is a body the
    console_actions route accepts, and the menu has Ctrl+Alt+Del, SysRq and NMI."""
    import re

    from vncproxy.actions import parse_action
    from vncproxy.web.clients import STATIC_DIR

    script = (STATIC_DIR / "console" / "actions.js").read_text()
    table = script[script.index("export const ACTIONS"):script.index("];")]
    items = re.findall(r"\['([^']+)', \{ action: '([a-z-]+)'(?:, key: '(\w)')? \}\]", table)
    assert len(items) == table.count("\n    [")
    names = set()
    for label, name, key in items:
        action = parse_action({"action": name, **({"key": key} if key else {})})
        names.add(action.name)
        assert (key in label) if key else True, label
    assert names == {"ctrl-alt-del", "sysrq", "nmi"}


def test_our_pages_have_no_inline_code():
    """Our noVNC page and the serial page load their script and styles from files, so their
    CSP allows scripts and styles from the origin alone."""
    from vncproxy.web.clients import OWN_LITE_PAGE, STATIC_DIR
    from vncproxy.web.csp import novnc_policy

    def directives(policy):
        return {d.split()[0]: d.split()[1:] for d in policy.split("; ")}

    policy = directives(novnc_policy(OWN_LITE_PAGE.read_text()))
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    policy = directives(novnc_policy((STATIC_DIR / "serial.html").read_text()))
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
