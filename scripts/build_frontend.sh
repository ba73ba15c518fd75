#!/usr/bin/env bash
# build_frontend.sh - build the Voxa web application (frontend/) that `voxa serve` serves at /app/.
#
#   bash scripts/build_frontend.sh        (from any directory; scripts/setup.sh calls it)
#
# 1. `npm ci` in frontend/ from the committed package-lock.json (the npm registry, once;
#    skipped while the lockfile is unchanged and node_modules is there).
# 2. `npm run build` (TypeScript check, then Vite) into a temporary folder that replaces
#    frontend/dist at the end, so an interrupted or failed build never leaves a half-built
#    application behind.
#
# Idempotent: skipped when a hash of the lockfile, the sources and the Node.js version matches
# the one recorded by the last successful build (frontend/dist/.voxa-source-hash).
#
# Environment knobs:
#   VOXA_SKIP_FRONTEND=1     do nothing
#   VOXA_FORCE_FRONTEND=1    rebuild even if nothing changed
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FRONTEND="$ROOT/frontend"
DIST="$FRONTEND/dist"
STAMP_NAME=".voxa-source-hash"
LOCK_STAMP="$FRONTEND/node_modules/.voxa-lock-hash"

log() { printf '[build_frontend] %s\n' "$*" >&2; }
die() { printf '[build_frontend] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ "${VOXA_SKIP_FRONTEND:-0}" == "1" ]]; then
    log "VOXA_SKIP_FRONTEND=1: not building the web application"
    exit 0
fi
[[ -f "$FRONTEND/package-lock.json" ]] || die "no $FRONTEND/package-lock.json"
command -v node >/dev/null 2>&1 || die "Node.js is not installed (apt-get install nodejs npm, or run scripts/setup.sh)"
command -v npm >/dev/null 2>&1 || die "npm is not installed (apt-get install npm, or run scripts/setup.sh)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$node_major" -ge 18 ]] || die "Node.js >= 18 is needed to build the web application (found $(node --version))"

cd "$FRONTEND"

# the sources that make the build: everything tracked or buildable under frontend/, less outputs
source_hash() {
    {
        node --version
        find . \( -path ./node_modules -o -path ./dist -o -path './.dist-*' \) -prune -o -type f -print \
            | LC_ALL=C sort | while IFS= read -r f; do printf '%s\n' "$f"; cat "$f"; done
    } | sha256sum | cut -d' ' -f1
}

want="$(source_hash)"
have=""
[[ -r "$DIST/$STAMP_NAME" && -f "$DIST/index.html" ]] && have="$(cat "$DIST/$STAMP_NAME")"
if [[ "${VOXA_FORCE_FRONTEND:-0}" != "1" && "$want" == "$have" ]]; then
    log "web application: up to date ($DIST)"
    exit 0
fi

lock_hash="$( { node --version; cat package-lock.json; } | sha256sum | cut -d' ' -f1)"
if [[ ! -d node_modules || ! -r "$LOCK_STAMP" || "$(cat "$LOCK_STAMP")" != "$lock_hash" ]]; then
    log "npm ci (from package-lock.json; about a minute on a fresh machine)"
    npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed (is the npm registry reachable?)"
    echo "$lock_hash" >"$LOCK_STAMP"
fi

start=$SECONDS
tmp="$(mktemp -d "$FRONTEND/.dist-tmp.XXXXXX")"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
log "npm run build (TypeScript check and Vite build)"
npm run --silent build -- --outDir "$tmp" --emptyOutDir --logLevel warn \
    || die "the web application build failed; see the messages above"
[[ -f "$tmp/index.html" && -f "$tmp/sw.js" ]] || die "the build produced no index.html / sw.js in $tmp"
echo "$want" >"$tmp/$STAMP_NAME"
old="$FRONTEND/.dist-old.$$"
[[ -d "$DIST" ]] && mv "$DIST" "$old"
mv "$tmp" "$DIST"
rm -rf "$old"
log "web application built in $((SECONDS - start)) s ($DIST)"
