"""
The Content-Security-Policy of the web clients' responses: one policy per page, made from the
page being served, and the policy of everything else (files, errors).

Pinning: noVNC's pages take C{host} and C{port} from the link and default them to the page's
own location. Every page here carries C{connect-src 'self'}, so the browser lets it open
WebSockets only to the origin it was loaded from: a link that names another host or port
(novnc/noVNC#2011, #2051) gets a blocked connection, never a console elsewhere. Behind a load
balancer the page's origin is C{public_url}, so the Nova URL form works unchanged.

Inline scripts and styles of noVNC's pages are allowed by their SHA-256 hashes, computed from
the file being served, so an upgraded noVNC keeps working and nothing else inline runs. xterm.js
creates C{<style>} elements at run time: the serial page gets a fresh nonce per response for
them (its script stamps the nonce on each C{<style>} it creates), instead of C{'unsafe-inline'}.

Framing: C{frame-ancestors} names the portals of C{[console] allowed_origins}, nobody else.
"""

import base64
import hashlib
import html.parser
import re

# Everything a page does not need is refused by default-src 'none'.
_BASE_POLICY = {
    "default-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'none'"],
    "frame-ancestors": ["'none'"],
}
#: The policy of every response that is not a page (files, errors).
ASSET_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


def render_policy(directives):
    """
    A CSP header value from C{{directive: [sources]}}.
    """
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def _csp_hash(text):
    # Browsers hash an element's text after the HTML parser normalized line breaks to LF.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


class _InlineCode(html.parser.HTMLParser):
    """
    Collects the text of inline C{<script>} (those without C{src}) and C{<style>} elements.
    """

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.scripts, self.styles = [], []
        self._into, self._text = None, []

    def handle_starttag(self, tag, attrs):
        if tag == "script" and not any(name == "src" for name, _ in attrs):
            self._into, self._text = self.scripts, []
        elif tag == "style":
            self._into, self._text = self.styles, []

    def handle_data(self, data):
        if self._into is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._into is not None:
            self._into.append("".join(self._text))
            self._into = None


_ORIGIN = re.compile(r"(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
_HOST = re.compile(r"(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")


def frame_ancestors(allowed_origins):
    """
    The C{frame-ancestors} sources for C{[console] allowed_origins}: the portals trusted to
    open consoles may also embed the pages (OpenStack Horizon shows noVNC in an iframe).
    Nothing configured: C{'none'}. Entries that are not a plain origin, host name or C{*} are
    left out, so no configured text can reach the header as anything but a source.
    """
    sources = []
    for entry in allowed_origins:
        if entry == "*":
            sources.append("*")
        elif _ORIGIN.fullmatch(entry) or _HOST.fullmatch(entry):
            sources.append(entry)
    return sources or ["'none'"]


def novnc_policy(page, ancestors=("'none'",)):
    """
    The CSP of one of noVNC's pages (its text): its own files, its inline code by hash,
    images from itself and C{data:} (noVNC draws cursors and JPEG rectangles from data URLs),
    WebSockets and fetches only to its own origin.
    """
    inline = _InlineCode()
    inline.feed(page)
    inline.close()
    return render_policy({
        **_BASE_POLICY,
        "frame-ancestors": list(ancestors),
        "script-src": ["'self'", *sorted({_csp_hash(s) for s in inline.scripts})],
        "style-src": ["'self'", *sorted({_csp_hash(s) for s in inline.styles})],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "media-src": ["'self'"],
        "connect-src": ["'self'"],
    })


def serial_policy(nonce, ancestors=("'none'",)):
    """
    The CSP of the serial page: its own scripts and styles, the C{<style>} elements xterm.js
    creates (by nonce), WebSockets only to its own origin.
    """
    return render_policy({
        **_BASE_POLICY,
        "frame-ancestors": list(ancestors),
        "script-src": ["'self'"],
        "style-src": ["'self'", f"'nonce-{nonce}'"],
        "img-src": ["'self'"],
        "connect-src": ["'self'"],
    })


__all__ = ["ASSET_POLICY", "frame_ancestors", "novnc_policy", "render_policy", "serial_policy"]
