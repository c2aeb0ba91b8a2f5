#!/usr/bin/env bash
# tools/webclients.sh - rebuild the committed browser libraries of the web clients after a
# change to the pins (webclients/package.json, then `npm install --package-lock-only` there).
#
# From the npm registry, at the versions pinned by webclients/package.json and
# webclients/package-lock.json (integrity hashes checked by `npm ci`):
#   - xterm.js and its fit addon, for /serial.html. Debian 12's libjs-xterm cannot be used:
#     its xterm.js is a CommonJS stub that require()s files the package does not ship, so it
#     does not load in a browser.
#   - noVNC's library (core/, vendor/), the fallback for hosts without Debian's package novnc:
#     the service serves the system's noVNC when /usr/share/novnc (or [web] novnc_dir) has it,
#     and this copy otherwise. The npm package has no HTML pages, so with it /vnc_lite.html and
#     /vnc_auto.html are consoleproxy's own page (vncproxy/web/static/novnc_lite.html) and
#     /vnc.html (the full UI, which needs the system package) is not available.
#
# What is served is copied, with each package's licence and a VERSIONS file, into
#   vncproxy/web/static/vendor/xterm/    (the default of [web] xterm_dir)
#   vncproxy/web/static/vendor/novnc/    (the noVNC fallback)
# which are committed, so that every install path (pip install of a checkout, sdist, wheel,
# dpkg-buildpackage) ships them with no build step and no node; .lock-sha256 records the lock
# file they were built from (tests/unit/test_webclients_build.py holds them to it).
#
# Idempotent: does nothing when the copies match the lock file. Needs node and npm.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$REPO/webclients
VENDOR=$REPO/vncproxy/web/static/vendor

log() { printf '[webclients] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stamp=$(sha256sum "$SRC/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$VENDOR/.lock-sha256" 2>/dev/null)" = "$stamp" ] &&
   [ -s "$VENDOR/xterm/xterm.mjs" ] && [ -s "$VENDOR/novnc/core/rfb.js" ]; then
    log "present: $(cat "$VENDOR"/*/VERSIONS | tr '\n' ' ')"
    exit 0
fi
command -v npm >/dev/null || die "npm is not installed (apt-get install npm)"

log "npm ci in $SRC"
(cd "$SRC" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
mod=$SRC/node_modules

versions() { # name version licence of each package directory given
    local dir
    for dir in "$@"; do
        node -e 'const p = require(process.argv[1]); console.log(p.name + " " + p.version + " " + p.license)' \
            "$dir/package.json"
    done
}

mkdir -p "$VENDOR"
tmp=$(mktemp -d "$VENDOR/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

x=$tmp/xterm
mkdir "$x"
cp "$mod/@xterm/xterm/lib/xterm.mjs" "$mod/@xterm/xterm/css/xterm.css" "$x/"
cp "$mod/@xterm/xterm/LICENSE" "$x/LICENSE.xterm"
cp "$mod/@xterm/addon-fit/lib/addon-fit.mjs" "$x/"
cp "$mod/@xterm/addon-fit/LICENSE" "$x/LICENSE.addon-fit"
# Source map comments point at files we do not serve; drop them so no browser asks.
sed -i '/^\/\/# sourceMappingURL=/d' "$x/xterm.mjs" "$x/addon-fit.mjs"
versions "$mod/@xterm/xterm" "$mod/@xterm/addon-fit" > "$x/VERSIONS"

n=$tmp/novnc
mkdir -p "$n/vendor"
cp -r "$mod/@novnc/novnc/core" "$n/"
cp -r "$mod/@novnc/novnc/vendor/pako" "$n/vendor/"
cp "$mod/@novnc/novnc/LICENSE.txt" "$mod/@novnc/novnc/AUTHORS" "$mod/@novnc/novnc/package.json" "$n/"
mkdir "$n/licences"
cp "$mod/@novnc/novnc/docs/"LICENSE.* "$n/licences/"
versions "$mod/@novnc/novnc" > "$n/VERSIONS"

chmod -R u=rwX,go=rX "$tmp"
rm -rf "$VENDOR/xterm" "$VENDOR/novnc"
mv "$x" "$VENDOR/xterm"
mv "$n" "$VENDOR/novnc"
echo "$stamp" > "$VENDOR/.lock-sha256"
log "installed into $VENDOR: $(cat "$VENDOR"/*/VERSIONS | tr '\n' ' ')"
