"""Chaos, scenario 9 (issue 14): fuzzed InferenceDeployments, valid and invalid, applied with
kubectl to the real API server while the operator runs.

On the real node (kubelet, containerd, runc; a cluster of the module's own), though no pod is
made here (below). Hypothesis draws specs from the models (`tests/support/fuzz.py`:
valid-looking, then none, one or two mutations: numbers at and around each bound, wrong types,
unknown fields, broken cross-field rules, odd strings, missing required fields, nulls, bad
quantities and durations).
TOTAL distinct objects (400) in batches of BATCH, derandomized, so every run applies the
same objects; each batch is one `kubectl apply` of a JSON stream, which sends each object on its
own with fieldValidation=Strict, as users' `kubectl apply -f` does. For each object:

- the API server refuses it, its message names a field the mutations touched, and
  `models.InferenceDeployment.model_validate` refuses it too, naming that field; or
- the API server accepts it, the model accepts it too, and the operator reconciles it: its
  Deployment appears, or its Ready condition says why not (EngineConfigInvalid, naming the
  problem). Ready=False/InvalidSpec on an accepted object is a disagreement too: the operator
  parses what the server stored.

What the server stored for an accepted object (nulls pruned, defaults filled in) must be what
the model makes of the document. An accepted object whose Deployment the API server then
refuses (what core/v1 checks and the CRD cannot say: a toleration with an empty key and
operator Equal) counts as reconciled when its status says so, and is listed: a gap in
admission, not a disagreement.

Throughout, the operator process stays alive, logs no traceback, and no autoscaler tick fails
for a reason other than the API (a tick that cannot run means an admitted spec the autoscaler
cannot act on). The namespace has a
ResourceQuota of zero pods: the fuzz is about admission and reconciling, and a valid spec may
ask for thousands of replicas, which the Deployment records but no pod is made for.

Every disagreement is collected and reported at the end, with the object and its mutations;
the test prints the counts that docs/reliability.md records (scenario 9).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
import re
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from tests.integration import realnode
from tests.integration.conftest import Operator
from tests.support import fuzz, wait

from kvscale.api import models
from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

cluster = realnode.module_cluster("fz", 2, None)

BATCH = 25
# 16 batches, 400 distinct objects, the same ones on every run. For a longer or another search:
# KVSCALE_FUZZ_BATCHES=40 KVSCALE_FUZZ_SEED=3 (a seed draws other objects than CI's).
BATCHES = int(os.environ.get("KVSCALE_FUZZ_BATCHES", "16"))
TOTAL = BATCH * BATCHES
SEED = os.environ.get("KVSCALE_FUZZ_SEED")
RECONCILE_TIMEOUT_S = 120.0  # a deadline to give up by on a busy machine, not a measurement

_CREATED = re.compile(rf"^{models.SINGULAR}\.{re.escape(models.GROUP)}/(\S+) created$", re.M)
# kubectl writes one error per refused object, in the order of the input, each on its own
# line (the server quotes values, so no message spans lines).
_ERROR_START = re.compile(r"^(Error from server|error:)", re.M)
# A tick the autoscaler could not run for a reason other than the API (a 404 while a batch is
# deleted is the API's): it cannot act on a spec the API server accepted.
_TICK_FAILED = re.compile(r"(\S+): autoscaler tick failed: (?!ApiError\()(\w+\(.*)$", re.M)
_NAMED = re.compile(rf'{models.KIND}\.{re.escape(models.GROUP)} "([^"]+)"')


@dataclasses.dataclass
class Tally:
    """What the fuzz saw, over all batches."""

    applied: int = 0
    refused: int = 0
    reconciled_deployment: int = 0
    reconciled_status: int = 0  # accepted, and Ready=False says why the engine cannot run it
    refused_after_admission: list[str] = dataclasses.field(default_factory=list)  # of those
    kinds: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    disagreements: list[str] = dataclasses.field(default_factory=list)


def _model_verdict(body: dict[str, Any]) -> list[str] | None:
    """None when the model accepts the object; else the wire path of each error."""
    try:
        models.InferenceDeployment.model_validate(body)
    except pydantic.ValidationError as error:
        return [fuzz.wire(tuple(item["loc"])) for item in error.errors()]
    return None


def _errors(stderr: str) -> list[str]:
    starts = [match.start() for match in _ERROR_START.finditer(stderr)]
    return [stderr[a:b].strip() for a, b in itertools.pairwise([*starts, len(stderr)])]


def _names(message_paths: list[str], named: set[str]) -> bool:
    """Whether the model's errors are about a touched field: at it, above it (a cross-field
    rule sits at the object and words the field), or below it (a field of a touched object)."""
    for at in message_paths:
        for path in named:
            if at == path or path.startswith(at + ".") or at.startswith((path + ".", path + "[")):
                return True
    return False


def _describe(fuzzed: fuzz.Fuzzed) -> str:
    spec = json.dumps(fuzzed.body["spec"])
    return f"{fuzzed.body['metadata']['name']} {fuzzed.mutations} spec={spec[:600]}"


def _listed(cluster: local.Cluster, namespace: str) -> list[dict[str, Any]]:
    listed = json.loads(
        cluster.kubectl("get", f"deployments,{models.PLURAL}", "-n", namespace, "-o", "json").stdout
    )
    items: list[dict[str, Any]] = listed["items"]
    return items


def _reconciled(items: list[dict[str, Any]], names: set[str]) -> dict[str, str]:
    """For each name that is reconciled: "deployment", or the Ready reason that says why not."""
    found: dict[str, str] = {}
    for item in items:
        name = item["metadata"]["name"]
        if name not in names:
            continue
        if item["kind"] == "Deployment":
            found[name] = "deployment"
            continue
        for condition in (item.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready" and condition.get("reason") in (
                "EngineConfigInvalid",
                "InvalidSpec",
            ):
                found.setdefault(name, f"{condition['reason']}: {condition.get('message')}")
    return found


def _apply_batch(
    cluster: local.Cluster, namespace: str, batch: list[fuzz.Fuzzed], tally: Tally
) -> None:
    stream = "\n".join(json.dumps(fuzzed.body) for fuzzed in batch)
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=stream, check=False)
    created = set(_CREATED.findall(result.stdout))
    refused = [fuzzed for fuzzed in batch if fuzzed.body["metadata"]["name"] not in created]
    errors = _errors(result.stderr)
    assert len(errors) == len(refused), (
        f"{len(refused)} objects were not created but kubectl wrote {len(errors)} errors:\n"
        f"{result.stderr}"
    )
    tally.applied += len(batch)
    accepted: dict[str, fuzz.Fuzzed] = {}
    for fuzzed in batch:
        for mutation in fuzzed.mutations:
            tally.kinds[mutation.split()[0]] += 1
        name = fuzzed.body["metadata"]["name"]
        model = _model_verdict(fuzzed.body)
        if name in created:
            accepted[name] = fuzzed
            if model is not None:
                tally.disagreements.append(
                    f"API server accepted, the model refused ({model}): {_describe(fuzzed)}"
                )
    for fuzzed, message in zip(refused, errors, strict=True):
        tally.refused += 1
        name = fuzzed.body["metadata"]["name"]
        quoted = _NAMED.search(message)
        assert quoted is None or quoted.group(1) == name, f"{name} matched to: {message}"
        named = fuzzed.named()
        model = _model_verdict(fuzzed.body)
        if not any(path in message for path in named):
            tally.disagreements.append(
                f"API server refused without naming {sorted(named)}: {message}; {_describe(fuzzed)}"
            )
        if model is None:
            tally.disagreements.append(
                f"API server refused ({message}), the model accepted: {_describe(fuzzed)}"
            )
        elif not _names(model, named):
            tally.disagreements.append(
                f"the model refused naming {model}, not {sorted(named)}: {_describe(fuzzed)}"
            )
    if not accepted:
        return

    stored = {
        item["metadata"]["name"]: item["spec"]
        for item in _listed(cluster, namespace)
        if item["kind"] == models.KIND
    }
    for name, fuzzed in accepted.items():
        if _model_verdict(fuzzed.body) is not None:
            continue  # a disagreement already
        # What the server stored (its defaults filled in, nulls pruned) is what the model
        # makes of the document: the operator acts on the stored object.
        parsed = models.InferenceDeploymentSpec.model_validate(fuzzed.body["spec"])
        if stored.get(name) != parsed.model_dump(mode="json", by_alias=True, exclude_none=True):
            tally.disagreements.append(
                f"stored {json.dumps(stored.get(name))[:600]} is not what the model makes of "
                f"{_describe(fuzzed)}"
            )

    def all_reconciled() -> dict[str, str] | None:
        found = _reconciled(_listed(cluster, namespace), set(accepted))
        return found if len(found) == len(accepted) else None

    try:
        outcome = wait.eventually(
            all_reconciled,
            f"{len(accepted)} accepted InferenceDeployments reconciled",
            timeout_s=RECONCILE_TIMEOUT_S,
            interval_s=1.0,
        )
    except AssertionError:
        outcome = _reconciled(_listed(cluster, namespace), set(accepted))
        for name in sorted(set(accepted) - set(outcome)):
            tally.disagreements.append(
                f"accepted, but neither a Deployment nor a reason in its status after "
                f"{RECONCILE_TIMEOUT_S:g} s: {_describe(accepted[name])}"
            )
    for name, how in outcome.items():
        if how == "deployment":
            tally.reconciled_deployment += 1
        elif how.startswith("EngineConfigInvalid"):
            tally.reconciled_status += 1
            # Admitted, but the API server refused an object rendered from it: the CRD lets
            # through what core/v1 refuses (counted and shown, so the gap stays visible).
            refusal = re.search(r"the API server refused (.*)", how)
            if refusal is not None:
                tally.refused_after_admission.append(
                    f"{name} {accepted[name].mutations}: {refusal.group(1)}"
                )
        else:
            tally.disagreements.append(f"accepted, but the operator says {how}: {name}")


def test_fuzzed_inference_deployments(
    cluster: local.Cluster, namespace: str, operator: Operator
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quota))
    start = operator.log_size()
    tally = Tally()
    seen: set[str] = set()
    pending: list[fuzz.Fuzzed] = []

    def apply_pending() -> None:
        _apply_batch(cluster, namespace, pending, tally)
        pending.clear()
        assert operator.process is not None
        assert operator.process.poll() is None, (
            f"the operator exited:\n{operator.log(start)[-4000:]}"
        )
        # What this batch made goes, so the operator's load does not grow batch after batch.
        cluster.kubectl("delete", models.PLURAL, "--all", "-n", namespace, "--wait=false")

    # One object per example, so hypothesis does not repeat itself across a batch's draws; it
    # still draws some specs more than once (the bare valid ones most), and each distinct spec
    # is applied once, until TOTAL.
    @settings(
        max_examples=TOTAL * 3,
        derandomize=SEED is None,
        database=None,
        deadline=None,
        phases=(Phase.generate,),  # no shrinking: the examples run on a real server
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz.inference_deployments("fuzz"))
    def draw_one(fuzzed: fuzz.Fuzzed) -> None:
        key = json.dumps(fuzzed.body["spec"], sort_keys=True)
        if len(seen) == TOTAL or key in seen:
            return
        seen.add(key)
        fuzzed.body["metadata"]["name"] = f"fuzz-{len(seen):04d}"
        pending.append(fuzzed)
        if len(pending) == BATCH:
            apply_pending()

    if SEED is not None:
        draw_one = seed(int(SEED))(draw_one)
    draw_one()
    if pending:
        apply_pending()
    log = operator.log(start)
    accepted = tally.applied - tally.refused
    print(
        f"\nfuzz: applied {tally.applied}, refused {tally.refused}, accepted {accepted} "
        f"(reconciled: Deployment {tally.reconciled_deployment}, "
        f"status says why not {tally.reconciled_status}, of which the API server refused the "
        f"rendered objects {len(tally.refused_after_admission)}), "
        f"disagreements {len(tally.disagreements)}; mutations {dict(sorted(tally.kinds.items()))}"
    )
    for line in tally.refused_after_admission:
        print(f"  refused after admission: {line[:400]}")
    assert operator.process is not None
    assert operator.process.poll() is None, "the operator exited"
    assert "Traceback" not in log, log[max(0, log.index("Traceback") - 2000) :][:6000]
    failed_ticks = sorted({f"{where}: {error}" for where, error in _TICK_FAILED.findall(log)})
    assert not failed_ticks, "autoscaler ticks failed:\n" + "\n".join(failed_ticks)
    assert not tally.disagreements, "\n".join(tally.disagreements)
    # The fuzz is worth something only if it reached both sides.
    assert tally.refused > 0
    assert accepted > 0
    assert tally.applied == TOTAL
