#!/usr/bin/env bash
# Put promtool (Prometheus' rule checker and rule unit-test runner) and the Prometheus server
# into a cache outside the checkout, one folder per version: $CACHE/tools/prometheus-<version>/.
# First choice: Debian's `prometheus` package, unpacked with dpkg-deb (never installed:
# installing it would start a Prometheus server as a system service); both binaries are kept.
# Fallback where apt cannot fetch it: build promtool (only promtool) from its Go module.
#
# Idempotent: a cached binary that runs is used as it is (instant when warm).
# Usage: scripts/install-prometheus.sh [promtool|prometheus]   (default: promtool; prints the
#        binary's path on its last line)
set -euo pipefail

WANT="${1:-promtool}"
case "$WANT" in
  promtool | prometheus) ;;
  *) echo "usage: $0 [promtool|prometheus]" >&2; exit 2 ;;
esac
CACHE="${KVSCALE_CACHE:-$HOME/.cache/kvscale}"
TOOLS="$CACHE/tools"
# The Go module version for the fallback: prometheus v3.5.0 is published as v0.305.0.
GO_VERSION="${KVSCALE_PROMTOOL_GO_VERSION:-v0.305.0}"

log() { echo "[install-prometheus] $*" >&2; }

# Any cached version whose binary runs, in reverse version order (a Go build's folder,
# `prometheus-go-*`, sorts before Debian's).
cached() {
  local dir
  for dir in $(ls -d "$TOOLS"/prometheus-*/ 2>/dev/null | sort -rV); do
    if [ -x "$dir$WANT" ] && "$dir$WANT" --version >/dev/null 2>&1; then
      echo "${dir%/}/$WANT"
      return 0
    fi
  done
  return 1
}

if cached; then
  exit 0
fi
mkdir -p "$TOOLS"
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
  log "downloading Debian's prometheus package (promtool and the server binary are kept)"
  (cd "$work" && apt-get download -qq prometheus >&2) || return 1
  local deb version dir
  deb="$(ls "$work"/prometheus_*.deb)"
  version="$(dpkg-deb -f "$deb" Version)"  # e.g. 2.42.0+ds-5+deb12u1: the cache's key
  dir="$TOOLS/prometheus-$version"
  dpkg-deb -x "$deb" "$work/root" || return 1
  mkdir -p "$dir"
  install -m 0755 "$work/root/usr/bin/promtool" "$dir/promtool.tmp"
  install -m 0755 "$work/root/usr/bin/prometheus" "$dir/prometheus.tmp"
  mv "$dir/promtool.tmp" "$dir/promtool"
  mv "$dir/prometheus.tmp" "$dir/prometheus"
}

from_go() {
  command -v go >/dev/null || return 1
  log "building promtool from github.com/prometheus/prometheus $GO_VERSION (cold: minutes)"
  local dir="$TOOLS/prometheus-go-$GO_VERSION"
  GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$work/bin" \
    go install -trimpath -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$GO_VERSION" >&2 || return 1
  mkdir -p "$dir"
  install -m 0755 "$work/bin/promtool" "$dir/promtool.tmp"
  mv "$dir/promtool.tmp" "$dir/promtool"
}

if ! from_debian; then
  # The server is not built from Go here: its module pulls in every service discovery
  # (cloud SDKs, client-go) and takes far longer than promtool on a small machine.
  if [ "$WANT" = prometheus ]; then
    log "could not get the Prometheus server: it comes from Debian's prometheus package (apt)"
    exit 1
  fi
  log "Debian's package is not available here; falling back to the Go module"
  if ! from_go; then
    log "could not get promtool: needs apt (Debian's prometheus package) or Go with the module proxy"
    exit 1
  fi
fi
found="$(cached)" || { log "installed, but no $WANT in $TOOLS/prometheus-*/ runs"; exit 1; }
"$found" --version >&2
echo "$found"
