"""
The web clients' Content-Security-Policies: CSP hashes of inline code, the serial page's nonce
policy, and the frame ancestors made from the allowed origins.
"""

from hypothesis import given
from hypothesis import strategies as st

from vncproxy.web.csp import frame_ancestors, novnc_policy, serial_policy

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


def test_frame_ancestors_are_the_allowed_origins():
    """Portals allowed to open consoles may embed the pages; without any, nobody may."""
    assert frame_ancestors(()) == ["'none'"]
    assert frame_ancestors(("https://horizon.example", "portal.example", "*.cloud.example")) == [
        "https://horizon.example", "portal.example", "*.cloud.example"]
    assert frame_ancestors(("*",)) == ["*"]
    assert frame_ancestors(("http://[2001:db8::1]:8080",)) == ["http://[2001:db8::1]:8080"]


def test_frame_ancestors_leave_out_anything_but_sources():
    """Configured text that is not an origin or host name never reaches the header."""
    assert frame_ancestors(("evil.example;script-src", "'unsafe-inline'", "javascript:x",
                            "https://a.example/path", "data:")) == ["'none'"]
    d = directives(novnc_policy("<p/>", frame_ancestors(("https://horizon.example",))))
    assert d["frame-ancestors"] == ["https://horizon.example"]
