#!/usr/bin/env bash
# tools/webclients.sh - install the browser libraries of the web clients at build time.
#
# xterm.js (for /serial.html) comes from the npm registry, at the versions pinned by
# webclients/package.json and webclients/package-lock.json (integrity hashes checked by
# `npm ci`). Debian 12's libjs-xterm cannot be used: its xterm.js is a CommonJS stub that
# require()s files the package does not ship, so it does not load in a browser.
#
# What is served is copied, with each package's licence and a VERSIONS file, into
#   vncproxy/web/static/vendor/xterm/     (the default of [web] xterm_dir)
# which git ignores: it is built, never committed. noVNC is not installed here: the service
# serves the system's copy (Debian package novnc, [web] novnc_dir).
#
# Idempotent: does nothing when the copy matches the lock file. Needs node and npm.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$REPO/webclients
DEST=$REPO/vncproxy/web/static/vendor/xterm

log() { printf '[webclients] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stamp=$(sha256sum "$SRC/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$DEST/.lock-sha256" 2>/dev/null)" = "$stamp" ] &&
   [ -s "$DEST/xterm.mjs" ] && [ -s "$DEST/addon-fit.mjs" ]; then
    log "xterm.js present ($(tr '\n' ' ' < "$DEST/VERSIONS"))"
    exit 0
fi
command -v npm >/dev/null || die "npm is not installed (apt-get install npm)"

log "npm ci in $SRC"
(cd "$SRC" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)

mod=$SRC/node_modules/@xterm
mkdir -p "$(dirname "$DEST")"
tmp=$(mktemp -d "$(dirname "$DEST")/.xterm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$mod/xterm/lib/xterm.mjs" "$mod/xterm/css/xterm.css" "$tmp/"
cp "$mod/xterm/LICENSE" "$tmp/LICENSE.xterm"
cp "$mod/addon-fit/lib/addon-fit.mjs" "$tmp/"
cp "$mod/addon-fit/LICENSE" "$tmp/LICENSE.addon-fit"
# Source map comments point at files we do not serve; drop them so no browser asks.
sed -i '/^\/\/# sourceMappingURL=/d' "$tmp/xterm.mjs" "$tmp/addon-fit.mjs"
for pkg in xterm addon-fit; do
    node -e 'const p = require(process.argv[1]); console.log(p.name + " " + p.version + " " + p.license)' \
        "$mod/$pkg/package.json"
done > "$tmp/VERSIONS"
echo "$stamp" > "$tmp/.lock-sha256"
chmod 755 "$tmp"
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
log "installed into $DEST: $(tr '\n' ' ' < "$DEST/VERSIONS")"
