# The two commands a newcomer runs: `make demo` and `make test`. Everything they need is
# installed by the targets below; heavy builds are cached under $(KVSCALE_CACHE), keyed by version.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export KVSCALE_CACHE ?= $(HOME)/.cache/kvscale
# The project's venv comes first so its kubectl (from PyPI) wins over any other on the machine.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test check lint typecheck contracts unit setup venv control-plane node engine-env tools images clean chaos

demo: setup
	$(BIN)/kvscale demo

test: setup check
	$(BIN)/pytest

check: lint typecheck contracts

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

contracts: venv
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest tests/unit

# The chaos scenarios (docs/reliability.md), printing their request accounting. Today only the
# engine killed and engine hung scenarios exist (about 110 s with the cluster's start).
chaos: setup
	$(BIN)/pytest tests/integration/test_chaos.py -s

setup: venv control-plane node engine-env tools

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/dev.lock -e '.[dev]'
	touch $@

control-plane:
	scripts/build-control-plane.sh

# kubelet and kube-proxy (Go modules), containerd, runc and CNI (Debian's packages, needs root),
# the pause and test images: the real node of `kvscale cluster up --runtime kubelet`.
node:
	scripts/build-node.sh

engine-env:
	scripts/build-engine-env.sh

# The kvscale image as an OCI archive (buildah over an mmdebstrap Debian base, needs root);
# cached by content hash, instant when warm. See docs/images.md.
images:
	scripts/build-images.sh

# helm (from its Go module), promtool (Debian's package, or its Go module) and the Prometheus
# Operator's CRDs (its Go module) for the chart's tests; all cached, instant when warm.
tools:
	scripts/build-helm.sh
	scripts/install-promtool.sh
	scripts/fetch-prometheus-operator-crds.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
