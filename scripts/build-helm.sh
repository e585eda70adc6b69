#!/usr/bin/env bash
# Build helm from its Go module (helm.sh/helm/v3) into a per-version cache outside the checkout.
# There are no prebuilt downloads on these machines; the Go module proxy is the source.
#
# Idempotent: a version that is already built is not rebuilt (instant when warm).
# Usage: scripts/build-helm.sh        (prints the helm binary's path on its last line)
set -euo pipefail

HELM_VERSION="${KVSCALE_HELM_VERSION:-v3.22.0}"
CACHE="${KVSCALE_CACHE:-$HOME/.cache/kvscale}"
DIR="$CACHE/tools/helm-$HELM_VERSION"
HELM="$DIR/helm"

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

if [ -x "$HELM" ]; then
  echo "$HELM"
  exit 0
fi
log() { echo "[build-helm] $*" >&2; }
mkdir -p "$DIR"
# helm reports its version from a variable set at link time; without it `helm version` says
# "v3.x-dev" and charts with a kubeVersion or helm version constraint misbehave.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags="$ldflags -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
log "building helm $HELM_VERSION (cold: a few minutes on 2 cores; warm Go cache: seconds)"
# helm's go.mod has no replace directives, so `go install pkg@version` builds it as published.
GOBIN="$DIR/.gobin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
mv "$DIR/.gobin/helm" "$HELM.tmp"
rmdir "$DIR/.gobin"
mv "$HELM.tmp" "$HELM"
"$HELM" version --short >&2
echo "$HELM"
