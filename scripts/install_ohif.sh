#!/usr/bin/env bash
# install_ohif.sh - install the prebuilt OHIF viewer (@ohif/app, pinned) that Voxa serves at /ohif/.
#
#   bash scripts/install_ohif.sh          (from any directory; scripts/setup.sh calls it)
#
# `npm pack @ohif/app@VERSION` fetches the published tarball (about 50 MB) from the npm
# registry into a cache folder; its package/dist/ (the built app, about 200 MB unpacked) is
# extracted into third_party/ohif/dist (git-ignored), and a marker file
# third_party/ohif/dist/.voxa-ohif-version records the version. Nothing is built and no npm
# dependencies are installed: dist/ is self-contained static files.
#
# Idempotent: when the marker names the pinned version and index.html is present, it does
# nothing. The extraction goes to a temporary folder that is renamed into place at the end,
# so an interrupted run never leaves a half-installed viewer behind.
#
# Environment knobs:
#   VOXA_OHIF_VERSION=3.13.2        version of @ohif/app to install (default: the pinned one)
#   VOXA_OHIF_DIR=/path/to/dist     where to install it (default <repo>/third_party/ohif/dist);
#                                   Voxa serves from the same variable
#   VOXA_OHIF_CACHE=/path           where the npm tarball is kept (default <repo>/third_party/ohif/cache)
#   VOXA_SKIP_OHIF=1                do nothing
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${VOXA_OHIF_VERSION:-3.13.2}"
DEST="${VOXA_OHIF_DIR:-$ROOT/third_party/ohif/dist}"
CACHE="${VOXA_OHIF_CACHE:-$ROOT/third_party/ohif/cache}"
MARKER_NAME=".voxa-ohif-version"
TARBALL="$CACHE/ohif-app-$VERSION.tgz"

log() { printf '[install_ohif] %s\n' "$*" >&2; }
die() { printf '[install_ohif] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ "${VOXA_SKIP_OHIF:-0}" == "1" ]]; then
    log "VOXA_SKIP_OHIF=1: not installing the OHIF viewer"
    exit 0
fi

installed_version() {
    [[ -r "$DEST/$MARKER_NAME" && -f "$DEST/index.html" ]] || return 1
    cat "$DEST/$MARKER_NAME"
}

if [[ "$(installed_version 2>/dev/null || true)" == "$VERSION" ]]; then
    log "OHIF viewer $VERSION: already installed ($DEST)"
    exit 0
fi

command -v tar >/dev/null 2>&1 || die "tar is needed to unpack the OHIF viewer"

mkdir -p "$CACHE"
if [[ ! -s "$TARBALL" ]]; then
    command -v npm >/dev/null 2>&1 \
        || die "npm is not installed: it is needed once to fetch @ohif/app@$VERSION (apt-get install nodejs npm, or run scripts/setup.sh)"
    log "npm pack @ohif/app@$VERSION (about 50 MB, once)"
    packdir="$(mktemp -d "$CACHE/pack.XXXXXX")"
    # --ignore-scripts: pack runs no lifecycle scripts anyway for a registry spec; belt and braces
    if ! (cd "$packdir" && npm pack --silent --ignore-scripts "@ohif/app@$VERSION" >"$packdir/.name" 2>"$packdir/.err"); then
        cat "$packdir/.err" >&2 || true
        rm -rf "$packdir"
        die "npm pack @ohif/app@$VERSION failed (is the npm registry reachable?)"
    fi
    name="$(tail -n1 "$packdir/.name")"
    [[ -s "$packdir/$name" ]] || { rm -rf "$packdir"; die "npm pack produced no tarball (got '$name')"; }
    mv "$packdir/$name" "$TARBALL"
    rm -rf "$packdir"
fi

log "unpacking package/dist from $(basename "$TARBALL")"
parent="$(dirname "$DEST")"
mkdir -p "$parent"
tmp="$(mktemp -d "$parent/.dist-tmp.XXXXXX")"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
tar -xzf "$TARBALL" -C "$tmp" package/package.json package/dist \
    || die "could not unpack package/dist from $TARBALL (corrupt download? delete it and run again)"

got="$(sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$tmp/package/package.json" | head -n1)"
[[ "$got" == "$VERSION" ]] || die "$TARBALL holds @ohif/app $got, not $VERSION (delete it and run again)"
[[ -f "$tmp/package/dist/index.html" ]] || die "$TARBALL has no package/dist/index.html"
compgen -G "$tmp/package/dist/*.js" >/dev/null \
    || die "$TARBALL has no JavaScript bundles in package/dist"

printf '%s\n' "$VERSION" >"$tmp/package/dist/$MARKER_NAME"
rm -rf "$DEST.old"
[[ -e "$DEST" ]] && mv "$DEST" "$DEST.old"
mv "$tmp/package/dist" "$DEST"
rm -rf "$DEST.old"
log "OHIF viewer $VERSION installed in $DEST ($(du -sh "$DEST" | cut -f1))"
