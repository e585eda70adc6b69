#!/usr/bin/env bash
# Put promtool (Prometheus' rule checker and rule unit-test runner) into a cache outside the
# checkout. First choice: Debian's `prometheus` package, unpacked with dpkg-deb (never
# installed: installing it would start a Prometheus server). Fallback where apt cannot fetch it:
# build promtool from its Go module.
#
# Idempotent: a cached promtool that runs is used as it is (instant when warm).
# Usage: scripts/install-promtool.sh        (prints the promtool binary's path on its last line)
set -euo pipefail

CACHE="${KVSCALE_CACHE:-$HOME/.cache/kvscale}"
DIR="$CACHE/tools/promtool"
PROMTOOL="$DIR/promtool"
# The Go module version for the fallback: prometheus v3.5.0 is published as v0.305.0.
GO_VERSION="${KVSCALE_PROMTOOL_GO_VERSION:-v0.305.0}"

if [ -x "$PROMTOOL" ] && "$PROMTOOL" --version >/dev/null 2>&1; then
  echo "$PROMTOOL"
  exit 0
fi
log() { echo "[install-promtool] $*" >&2; }
mkdir -p "$DIR"
work="$(mktemp -d)"
chmod 755 "$work"  # apt-get download runs as the _apt user where it can
trap 'rm -rf "$work"' EXIT

from_debian() {
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || return 1
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || return 1
    log "apt-get update (the package lists are missing)"
    apt-get update -qq >&2 || return 1
  fi
  log "downloading Debian's prometheus package (only promtool is kept)"
  (cd "$work" && apt-get download -qq prometheus >&2) || return 1
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root" || return 1
  install -m 0755 "$work/root/usr/bin/promtool" "$PROMTOOL.tmp"
}

from_go() {
  command -v go >/dev/null || return 1
  log "building promtool from github.com/prometheus/prometheus $GO_VERSION (cold: minutes)"
  GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$work/bin" \
    go install -trimpath -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$GO_VERSION" >&2 || return 1
  install -m 0755 "$work/bin/promtool" "$PROMTOOL.tmp"
}

if ! from_debian; then
  log "Debian's package is not available here; falling back to the Go module"
  if ! from_go; then
    log "could not get promtool: needs apt (Debian's prometheus package) or Go with the module proxy"
    exit 1
  fi
fi
mv "$PROMTOOL.tmp" "$PROMTOOL"
"$PROMTOOL" --version >&2
echo "$PROMTOOL"
