#!/usr/bin/env bash
# Build the real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler) and etcd from the Go module proxy, into a per-version cache outside the
# checkout. Nothing here is downloaded prebuilt: there is no other source on these machines.
#
# Idempotent: a version whose binaries are all present is not rebuilt.
# Usage: scripts/build-control-plane.sh            (prints the bin directory on its last line)
set -euo pipefail

KUBE_VERSION="${KVSCALE_KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${KVSCALE_ETCD_VERSION:-v3.6.8}"   # the etcd that kubernetes $KUBE_VERSION pins
CACHE="${KVSCALE_CACHE:-$HOME/.cache/kvscale}"
BIN="$CACHE/control-plane/kube-$KUBE_VERSION-etcd-$ETCD_VERSION/bin"
WORK="$CACHE/control-plane/build"

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
# shellcheck source=scripts/lib/kube-module.sh
. "$(dirname "$0")/lib/kube-module.sh"

have_all() {
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$BIN/$b" ] || return 1
  done
}

if have_all; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN" "$WORK"
log() { echo "[build-control-plane] $*" >&2; }

# --- kubernetes -------------------------------------------------------------------------
if ! [ -x "$BIN/kube-apiserver" ] || ! [ -x "$BIN/kube-controller-manager" ] || ! [ -x "$BIN/kube-scheduler" ]; then
  log "resolving k8s.io/kubernetes $KUBE_VERSION"
  kdir="$WORK/kube-$KUBE_VERSION"
  kube_wrapper_module "$kdir" "$KUBE_VERSION" kube-apiserver kube-controller-manager kube-scheduler
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    if ! [ -x "$BIN/$cmd" ]; then
      log "building $cmd (cold: about 6 minutes for all four on 2 cores; warm Go cache: seconds)"
      kube_build "$kdir" "$KUBE_VERSION" "$BIN" "$cmd"
    fi
  done
fi

# --- etcd -------------------------------------------------------------------------------
# `go install go.etcd.io/etcd/server/v3@...` refuses modules with replace directives; a
# wrapper module that requires it and builds the package (main is at its root) works.
if ! [ -x "$BIN/etcd" ]; then
  edir="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$edir"
  go_line="$(grep -E '^go [0-9]' "$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')")"
  printf 'module kvscale.local/etcd-build\n\n%s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$go_line" "$ETCD_VERSION" > "$edir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$edir/tools.go"
  (cd "$edir" && go mod tidy -e >&2)
  log "building etcd $ETCD_VERSION"
  (cd "$edir" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3 >&2)
  mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

have_all
echo "$BIN"
