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
# kubernetes' go.mod requires its staging modules at v0.0.0 and replaces them with local
# paths; a consumer must replace each with the published v0.Y.Z tag instead.
kube_minor="${KUBE_VERSION#v1.}"          # 36.3
staging_version="v0.${kube_minor}"        # v0.36.3
kdir="$WORK/kube-$KUBE_VERSION"
mkdir -p "$kdir"
if ! [ -x "$BIN/kube-apiserver" ] || ! [ -x "$BIN/kube-controller-manager" ] || ! [ -x "$BIN/kube-scheduler" ]; then
  log "resolving k8s.io/kubernetes $KUBE_VERSION"
  upstream_mod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module kvscale.local/kube-build"
    echo
    grep -E '^go [0-9]' "$upstream_mod"
    grep -E '^godebug ' "$upstream_mod" || true
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[A-Za-z0-9._-]+ v0\.0\.0(\s|$)' "$upstream_mod" | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$kdir/go.mod"
  cat > "$kdir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
  (cd "$kdir" && go mod tidy -e >&2)
  major=1
  minor="${kube_minor%%.*}"
  ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    if ! [ -x "$BIN/$cmd" ]; then
      log "building $cmd (cold: about 6 minutes for all four on 2 cores; warm Go cache: seconds)"
      (cd "$kdir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2)
      mv "$BIN/$cmd.tmp" "$BIN/$cmd"
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
