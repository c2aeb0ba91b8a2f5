"""
The web clients' policies: CSP hashes of inline code, the serial page's nonce policy, and the
noVNC version lookup.
"""

import gzip
import json

from hypothesis import given
from hypothesis import strategies as st

from vncproxy.web.clients import novnc_policy, novnc_version, serial_policy

ALERT = "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"  # the CSP spec's alert(1)
RED = "'sha256-XeYlw2NVzOfB1UCIJqCyGr+0n7bA4fFslFpvKu84IAw='"    # body { color: red; }


def directives(policy):
    return {d.split()[0]: d.split()[1:] for d in policy.split("; ")}


def test_inline_script_and_style_are_allowed_by_their_hashes():
    """Inline <script> and <style> get their SHA-256 in script-src and style-src, nothing looser."""
    page = ("<html><head><style>body { color: red; }</style>"
            "<script type=\"module\">alert(1)</script></head></html>")
    d = directives(novnc_policy(page))
    assert d["script-src"] == ["'self'", ALERT]
    assert d["style-src"] == ["'self'", RED]
    assert "'unsafe-inline'" not in novnc_policy(page) and "'unsafe-eval'" not in novnc_policy(page)


def test_scripts_with_src_are_not_hashed():
    """A <script src> is covered by 'self'; only inline code is hashed."""
    d = directives(novnc_policy('<script src="app/ui.js"></script><script>alert(1)</script>'))
    assert d["script-src"] == ["'self'", ALERT]


def test_line_breaks_are_hashed_as_the_browser_sees_them():
    """CRLF in the file is LF in the DOM, and the hash follows the DOM."""
    lf = novnc_policy("<script>\nlet a = 1;\nlet b = 2;\n</script>")
    crlf = novnc_policy("<script>\r\nlet a = 1;\r\nlet b = 2;\r\n</script>")
    assert lf == crlf
    assert "'sha256-BD6/Geakp0a4NaD3YYTotWuzz4jnAvDSJU3aqCUMRFI='" in lf


def test_novnc_policy_pins_connections_and_denies_the_rest():
    """WebSockets and fetches go to the page's own origin only; no frames, no plugins, no base."""
    d = directives(novnc_policy("<p>no code</p>"))
    assert d["default-src"] == ["'none'"]
    assert d["connect-src"] == ["'self'"]
    assert d["frame-ancestors"] == ["'none'"]
    assert d["base-uri"] == ["'none'"] and d["form-action"] == ["'none'"]
    assert d["img-src"] == ["'self'", "data:"]
    assert d["script-src"] == ["'self'"] and d["style-src"] == ["'self'"]


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<\r"),
               max_size=200))
def test_any_inline_script_gets_exactly_one_hash(code):
    """Whatever the inline script holds, the policy names one hash for it."""
    d = directives(novnc_policy(f"<script>{code}</script>"))
    assert len(d["script-src"]) == 2 and d["script-src"][1].startswith("'sha256-")


def test_serial_policy_allows_styles_by_nonce_only():
    """The serial page's inline styles need its nonce; scripts come from the origin only."""
    d = directives(serial_policy("n0nce"))
    assert d["style-src"] == ["'self'", "'nonce-n0nce'"]
    assert d["script-src"] == ["'self'"]
    assert d["connect-src"] == ["'self'"]
    assert d["frame-ancestors"] == ["'none'"]


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


def test_frame_ancestors_are_the_allowed_origins():
    """Portals allowed to open consoles may embed the pages; without any, nobody may."""
    from vncproxy.web.clients import frame_ancestors

    assert frame_ancestors(()) == ["'none'"]
    assert frame_ancestors(("https://horizon.example", "portal.example", "*.cloud.example")) == [
        "https://horizon.example", "portal.example", "*.cloud.example"]
    assert frame_ancestors(("*",)) == ["*"]
    assert frame_ancestors(("http://[2001:db8::1]:8080",)) == ["http://[2001:db8::1]:8080"]


def test_frame_ancestors_leave_out_anything_but_sources():
    """Configured text that is not an origin or host name never reaches the header."""
    from vncproxy.web.clients import frame_ancestors

    assert frame_ancestors(("evil.example;script-src", "'unsafe-inline'", "javascript:x",
                            "https://a.example/path", "data:")) == ["'none'"]
    d = directives(novnc_policy("<p/>", frame_ancestors(("https://horizon.example",))))
    assert d["frame-ancestors"] == ["https://horizon.example"]


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

    policy = directives(novnc_policy(OWN_LITE_PAGE.read_text()))
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    policy = directives(novnc_policy((STATIC_DIR / "serial.html").read_text()))
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
