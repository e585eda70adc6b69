# The two commands a newcomer runs: `make demo` and `make test`. Everything they need is
# installed by the targets below; heavy builds are cached under $(KVSCALE_CACHE), keyed by version.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export KVSCALE_CACHE ?= $(HOME)/.cache/kvscale
# The project's venv comes first so its kubectl (from PyPI) wins over any other on the machine.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test extended check lint typecheck contracts unit setup venv control-plane node engine-env tools images engine-image clean chaos

demo: setup
	$(BIN)/kvscale demo

# Every test but the `extended` ones: longer variants of scenarios and flows that a test here
# covers already (docs/reliability.md says which); `make extended` runs those. The slowest 30
# tests' durations close the output: the suite must stay inside CI's 90 minutes.
test: setup check
	$(BIN)/pytest -m "not extended" --durations=30

extended: setup
	$(BIN)/pytest -m extended -s

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

# The chaos scenarios (docs/reliability.md), printing their request accounting and the alerts a
# real Prometheus saw, each module on a real-node cluster of its own: an engine killed or hung
# (test_chaos.py, about 2.5 min); a sidecar cut off from the operator or serving it garbage,
# and two deployments short of GPUs (test_chaos_control.py, about 4.5 min); the operator
# SIGKILLed mid-scale-up and mid-scale-down (test_chaos_operator.py, about 2.5 min); 400
# fuzzed InferenceDeployments applied with kubectl, the API server's verdicts against the
# models' (test_chaos_fuzz.py, about 1.5 min); 12 twin InferenceDeployments under one operator
# (test_chaos_fleet.py, about 2 min); GitOps applies of the engine Deployment's replicas and of
# a pod-template change (test_chaos_gitops.py, about 2.5 min); the API server and etcd each
# down for 30 s under load (test_chaos_apiserver.py, about 5.5 min); the kubelet stopped past
# the node-monitor grace period (test_real_node_inference.py, about 3.5 min); the leader pod
# deleted mid-scale-up and the API server down under the chart's leader election
# (test_real_node_operator.py, about 4 min). About 30 minutes in all on 2 cores; `make test`
# runs the same modules but their `extended` tests (the hang, etcd's outage, the leader deleted
# mid-scale-down and the API server down under leader election: about 6 minutes). The fleet
# benchmark is `.venv/bin/python benchmarks/fleet_bench.py` (its own real-node cluster, 2
# batches of 8 pods, a 120 s window: 2 cores' CPU requests hold 19 twin pods).
chaos: setup
	$(BIN)/pytest tests/integration/test_chaos.py tests/integration/test_chaos_control.py \
		tests/integration/test_chaos_operator.py tests/integration/test_chaos_fuzz.py \
		tests/integration/test_chaos_fleet.py tests/integration/test_chaos_gitops.py \
		tests/integration/test_chaos_apiserver.py tests/integration/test_real_node_inference.py \
		tests/integration/test_real_node_operator.py -s

setup: venv control-plane node engine-env tools images engine-image

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/dev.lock -e '.[dev]'
	touch $@

control-plane:
	scripts/build-control-plane.sh

# kubelet and kube-proxy (Go modules), containerd, runc and CNI (Debian's packages, needs root),
# the pause and test images: the real node of `kvscale cluster up`.
node:
	scripts/build-node.sh

engine-env:
	scripts/build-engine-env.sh

# The kvscale and engine-twin images as OCI archives (buildah over an mmdebstrap Debian base,
# needs root); cached by content hash, instant when warm. See docs/images.md.
images:
	scripts/build-images.sh

# The vLLM CPU engine image (engine_env/Containerfile: the engine lock on the same Debian base),
# about 6 GB; cached by its Containerfile and the lock, so a source edit does not rebuild it.
engine-image:
	scripts/build-images.sh engine

# helm (from its Go module), promtool and the Prometheus server (Debian's package; promtool also
# from its Go module) and the Prometheus Operator's CRDs (its Go module) for the chart's tests
# and the chaos scenarios' alerts; all cached, instant when warm.
tools:
	scripts/build-helm.sh
	scripts/install-prometheus.sh promtool
	scripts/install-prometheus.sh prometheus
	scripts/fetch-prometheus-operator-crds.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
