"""
The web clients of the console listener: noVNC's pages and the serial terminal page, with
the files they load, each served under a Content-Security-Policy made for it.

URL space (everything else is 404; directories are never listed)::

    /vnc.html                noVNC's full UI            (the system's noVNC, [web] novnc_dir)
    /vnc_lite.html           noVNC's minimal page       (ours when noVNC is the npm library)
    /vnc_auto.html           our noVNC page (static/novnc_lite.html): the console URL we hand
                             out (Nova's name), with the console actions menu
    /console/                its script and style, and the actions menu of both our pages
    /app/ /core/ /vendor/    noVNC's modules, styles, images
    /package.json            noVNC's version (its full UI shows it)
    /favicon.ico             noVNC's icon
    /serial.html?token=T     the serial terminal page (ours)
    /serial/                 its script and style (ours, vncproxy/web/static/serial)
    /xterm/                  xterm.js ([web] xterm_dir, built by tools/webclients.sh)

noVNC is the system's copy ([web] novnc_dir, Debian's package novnc) when that directory holds
noVNC, otherwise the library that tools/webclients.sh installed from npm at build time; the npm
package has no pages, so with it vnc_lite.html is our own small page (static/novnc_lite.html)
and vnc.html is 404. vnc_auto.html, the page of the URLs the token API hands out, is always our
own page, on noVNC's RFB module from whichever copy is served: it has the "Send…" menu of
console actions (static/console/actions.js, shared with the serial page) and no inline code.

The policies themselves (pinning connections to the page's origin, inline code by hash, the
serial page's nonce, framing) are L{vncproxy.web.csp}'s.
"""

import gzip
import json
import re
import secrets
import warnings
from pathlib import Path

from twisted.logger import Logger
from twisted.web import resource

from vncproxy.web.csp import frame_ancestors, novnc_policy, serial_policy

with warnings.catch_warnings():
    # Twisted >= 22.10 builds its own deprecated error pages when this module is imported.
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web import static

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_XTERM_DIR = STATIC_DIR / "vendor" / "xterm"
NPM_NOVNC_DIR = STATIC_DIR / "vendor" / "novnc"
OWN_LITE_PAGE = STATIC_DIR / "novnc_lite.html"
_NOT_INSTALLED = ("noVNC is not installed ({path} is missing): install the package novnc, "
                  "set [web] novnc_dir, or run tools/webclients.sh")
_NO_FULL_UI = ("noVNC's full UI is not installed ({path} is missing): install the package "
               "novnc or set [web] novnc_dir; /vnc_lite.html works with the library alone")

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".oga": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".txt": "text/plain; charset=utf-8",
}


def _no_store(request):
    request.setHeader(b"cache-control", b"no-store")


def _page_headers(request, policy, ancestors):
    _no_store(request)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"content-security-policy", policy.encode("ascii"))
    if list(ancestors) != ["'none'"]:
        # X-Frame-Options cannot name several origins; CSP's frame-ancestors decides.
        request.responseHeaders.removeHeader(b"x-frame-options")


class _Missing(resource.Resource):
    """
    404 as plain text: a file that does not exist, or a page whose files are not installed
    (the message says what to install).
    """

    isLeaf = True

    def __init__(self, message):
        super().__init__()
        self._message = message

    def render_GET(self, request):
        request.setResponseCode(404)
        _no_store(request)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self._message.encode("utf-8") + b"\n"

    render_HEAD = render_GET


class _Files(static.File):
    """
    A directory of files with fixed content types, no listings, no script processors. Files
    are revalidated on each use (C{no-cache}), so an upgraded package is picked up at once.
    """

    contentTypes = _CONTENT_TYPES
    childNotFound = _Missing("not found")

    def __init__(self, path, defaultType="application/octet-stream", ignoredExts=(),
                 registry=None):
        # (File.createSimilarFile builds each child with these positional arguments.)
        super().__init__(path, defaultType, ignoredExts, registry)

    def directoryListing(self):
        return self.childNotFound

    def redirect(self, request):
        return self.childNotFound.render(request)

    def render_GET(self, request):
        if not request.responseHeaders.hasHeader(b"cache-control"):
            request.setHeader(b"cache-control", b"no-cache")
        return super().render_GET(request)

    render_HEAD = render_GET


class NoVncPage(resource.Resource):
    """
    One of noVNC's HTML pages, read on each request, with its own CSP.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, path, missing=_NOT_INSTALLED, ancestors=("'none'",)):
        super().__init__()
        self._path = Path(path)
        self._missing = missing
        self._ancestors = tuple(ancestors)

    def render_GET(self, request):
        try:
            data = self._path.read_bytes()
        except OSError as e:
            self._log.warn("cannot read noVNC page {path}: {error}", path=str(self._path),
                           error=e.strerror)
            return _Missing(self._missing.format(path=self._path)).render(request)
        policy = novnc_policy(data.decode("utf-8", "replace"), self._ancestors)
        _page_headers(request, policy, self._ancestors)
        return b"" if request.method == b"HEAD" else data

    render_HEAD = render_GET


class SerialPage(resource.Resource):
    """
    The serial terminal page: a template with a fresh CSP nonce per response.
    """

    isLeaf = True

    def __init__(self, template, xterm_dir, ancestors=("'none'",)):
        super().__init__()
        self._template = Path(template).read_text(encoding="utf-8")
        self._xterm_dir = Path(xterm_dir)
        self._ancestors = tuple(ancestors)

    def render_GET(self, request):
        if not (self._xterm_dir / "xterm.mjs").is_file():
            return _Missing(f"xterm.js is not installed ({self._xterm_dir}): run "
                            "tools/webclients.sh or set [web] xterm_dir").render(request)
        nonce = secrets.token_urlsafe(18)
        _page_headers(request, serial_policy(nonce, self._ancestors), self._ancestors)
        page = self._template.replace("{{nonce}}", nonce).encode("utf-8")
        return b"" if request.method == b"HEAD" else page

    render_HEAD = render_GET


class _Index(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        _no_store(request)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (b"consoleproxy console listener.\n"
                b"Open the console URL you were given: /vnc_auto.html?path=websockify%3Ftoken%3D..."
                b" (VNC) or /serial.html?token=... (serial).\n")

    render_HEAD = render_GET


def novnc_version(novnc_dir, changelog=Path("/usr/share/doc/novnc/changelog.Debian.gz")):
    """
    The version of the noVNC in C{novnc_dir}: from its package.json (upstream and npm copies),
    else from Debian's changelog (the package novnc ships none), else C{None}.
    """
    try:
        return json.loads((Path(novnc_dir) / "package.json").read_text("utf-8"))["version"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with gzip.open(changelog, "rt", encoding="utf-8") as f:
            first = f.readline()
    except OSError:
        return None
    match = re.match(r"novnc \((?:\d+:)?([^)\s-]+)", first)
    return match.group(1) if match else None


class _PackageJson(resource.Resource):
    """
    noVNC's full UI fetches ./package.json to show its version; Debian's copy has none, so
    the version is answered from what L{novnc_version} finds.
    """

    isLeaf = True

    def __init__(self, novnc_dir):
        super().__init__()
        self._novnc_dir = novnc_dir

    def render_GET(self, request):
        version = novnc_version(self._novnc_dir)
        if version is None:
            return _Missing("not found").render(request)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-cache")
        body = json.dumps({"name": "novnc", "version": version}).encode("utf-8")
        return b"" if request.method == b"HEAD" else body

    render_HEAD = render_GET


class _Favicon(resource.Resource):
    """
    noVNC's icon when it is installed, otherwise nothing (204): browsers ask every page for it.
    """

    isLeaf = True

    def __init__(self, path):
        super().__init__()
        self._path = Path(path)

    def render_GET(self, request):
        try:
            data = self._path.read_bytes()
        except OSError:
            request.setResponseCode(204)
            return b""
        request.setHeader(b"content-type", b"image/png")
        request.setHeader(b"cache-control", b"no-cache")
        return b"" if request.method == b"HEAD" else data

    render_HEAD = render_GET


def resolve_novnc(novnc_dir, fallback=None):
    """
    Which noVNC to serve: C{(directory, lite page)}. The configured directory (the system's
    copy) when it holds noVNC, otherwise the copy built from npm; its own vnc_lite.html when
    it has one, otherwise ours (the npm package ships the library without pages).
    """
    novnc = Path(novnc_dir)
    fallback = Path(fallback) if fallback is not None else NPM_NOVNC_DIR
    if not _has_novnc(novnc) and _has_novnc(fallback):
        novnc = fallback
    lite = novnc / "vnc_lite.html"
    if _has_novnc(novnc) and not lite.is_file():
        lite = OWN_LITE_PAGE
    return novnc, lite


def _has_novnc(directory):
    return (directory / "core" / "rfb.js").is_file()


class WebClients(resource.Resource):
    """
    The tree of the web clients (plain GET and HEAD on the console listener).

    @param novnc_dir: noVNC's directory (vnc.html, vnc_lite.html, app/, core/, vendor/).
    @param xterm_dir: the xterm.js directory (xterm.mjs, xterm.css, addon-fit.mjs); empty for
        the copy built by tools/webclients.sh.
    @param novnc_fallback: the noVNC library built from npm, used when C{novnc_dir} has none
        (default: L{NPM_NOVNC_DIR}).
    @param allowed_origins: C{[console] allowed_origins}: the pages may be framed by these
        (L{frame_ancestors}), by nobody when empty.
    """

    _log = Logger()

    def __init__(self, novnc_dir, xterm_dir, novnc_fallback=None, allowed_origins=()):
        super().__init__()
        novnc, lite_path = resolve_novnc(novnc_dir, novnc_fallback)
        ancestors = frame_ancestors(allowed_origins)
        xterm = Path(xterm_dir) if xterm_dir else DEFAULT_XTERM_DIR
        self.putChild(b"", _Index())
        self.putChild(b"vnc.html", NoVncPage(novnc / "vnc.html", _NO_FULL_UI, ancestors))
        self.putChild(b"vnc_lite.html", NoVncPage(lite_path, ancestors=ancestors))
        # Our page needs noVNC's library; without one it is the same 404 as vnc_lite.html.
        own_page = OWN_LITE_PAGE if _has_novnc(novnc) else lite_path
        self.putChild(b"vnc_auto.html", NoVncPage(own_page, ancestors=ancestors))
        self.putChild(b"console", _Files(str(STATIC_DIR / "console")))
        self.putChild(b"package.json", _PackageJson(novnc))
        for name in ("app", "core", "vendor"):
            self.putChild(name.encode(), _Files(str(novnc / name)))
        self.putChild(b"favicon.ico", _Favicon(novnc / "app" / "images" / "icons" / "novnc-32x32.png"))
        self.putChild(b"serial.html", SerialPage(STATIC_DIR / "serial.html", xterm, ancestors))
        self.putChild(b"serial", _Files(str(STATIC_DIR / "serial")))
        self.putChild(b"xterm", _Files(str(xterm)))
        if _has_novnc(novnc):
            self._log.info("web clients: noVNC {version} from {dir}, {page} as vnc_lite.html",
                           version=novnc_version(novnc) or "(version unknown)", dir=str(novnc),
                           page=str(lite_path))
        else:
            self._log.warn("noVNC not found in {dir} (nor built from npm): /vnc.html and "
                           "/vnc_lite.html answer 404 (install the package novnc, set [web] "
                           "novnc_dir, or run tools/webclients.sh)", dir=str(novnc))
        if not (xterm / "xterm.mjs").is_file():
            self._log.warn("xterm.js not found in {dir}: /serial.html answers 404 (run "
                           "tools/webclients.sh or set [web] xterm_dir)", dir=str(xterm))

    def getChild(self, name, request):
        return _Missing("not found")


__all__ = ["WebClients", "novnc_version", "resolve_novnc"]
