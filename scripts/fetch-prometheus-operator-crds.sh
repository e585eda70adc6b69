#!/usr/bin/env bash
# Fetch the Prometheus Operator's real CRDs (ServiceMonitor, PodMonitor, PrometheusRule) into
# the cache, so the chart's optional monitoring objects are validated by the API server
# against their real schemas (tests/integration/test_helm_chart.py). They ship inside the
# operator's Go module (example/prometheus-operator-crd/), which the Go module proxy serves.
#
# Idempotent: a version already cached is not fetched again (instant when warm).
# Usage: scripts/fetch-prometheus-operator-crds.sh     (prints the CRD directory on its last line)
set -euo pipefail

VERSION="${KVSCALE_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CACHE="${KVSCALE_CACHE:-$HOME/.cache/kvscale}"
DIR="$CACHE/tools/prometheus-operator-crds-$VERSION"
KINDS="servicemonitors podmonitors prometheusrules"

have_all() {
  for kind in $KINDS; do
    [ -s "$DIR/monitoring.coreos.com_$kind.yaml" ] || return 1
  done
}

if have_all; then
  echo "$DIR"
  exit 0
fi
log() { echo "[fetch-prometheus-operator-crds] $*" >&2; }
log "downloading github.com/prometheus-operator/prometheus-operator@$VERSION (Go module)"
src="$(GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json \
  "github.com/prometheus-operator/prometheus-operator@$VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
mkdir -p "$DIR"
for kind in $KINDS; do
  install -m 0644 "$src/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$DIR/"
done
have_all
echo "$DIR"
