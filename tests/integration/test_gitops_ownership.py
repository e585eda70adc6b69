"""GitOps and the operator share objects without fighting: server-side apply ownership.

A GitOps tool owns the InferenceDeployment's spec (here applied server-side under Argo CD's
field manager, `argocd-controller`); the operator owns what it renders on the engine
Deployment (`kvscale-operator`) and the Deployment's replicas (`kvscale-autoscaler`, a
server-side apply of that one field). The tests show, on the real API server with the
operator running:

- Re-applying the CR from Git (another sync, or a change of other fields) never resets the
  replica count the operator set, and the CR's spec stays the tool's alone.
- A change the user makes in Git reaches the engine Deployment.
- A field the user adds to the engine Deployment under its own manager (a label) survives
  the operator's applies: the operator only ever takes the fields it renders.
- A tool that applies the engine Deployment's replicas itself is refused with a conflict
  naming `kvscale-autoscaler` — which is why docs/gitops.md has Argo CD ignore that field.

On the real node (a cluster of the module's own), the engine pods run the node's webecho
image (`manifest.never_ready_spec`): they never become ready,
so the autoscaler holds whatever count it finds (missing data never scales down), and every
change of replicas here is one the operator itself made.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

import pytest
import yaml
from tests.integration import realnode
from tests.support import manifest, wait

from kvscale.localstack import cluster as local

pytestmark = pytest.mark.cluster

cluster = realnode.module_cluster("gi")

GITOPS = "argocd-controller"
NAME = "chat"


class Operator(Protocol):
    """What these tests need of the `operator` fixture (tests/integration/conftest.py)."""

    def log(self, since: int = 0) -> str: ...


def in_git(namespace: str, min_replicas: int = 1, max_num_seqs: int = 256) -> str:
    """The CR as it sits in Git: no spec.replicas (the autoscaler's), no status."""
    spec = manifest.never_ready_spec(
        engine={"maxNumSeqs": max_num_seqs},
        scaling={"minReplicas": min_replicas, "maxReplicas": 4},
    )
    return yaml.safe_dump(manifest.inference_deployment(NAME, spec, namespace))


def sync(cluster: local.Cluster, text: str, manager: str = GITOPS) -> None:
    """What Argo CD does with ServerSideApply=true (Flux's kustomize-controller likewise)."""
    cluster.kubectl("apply", "--server-side", f"--field-manager={manager}", "-f", "-", input=text)


def get(cluster: local.Cluster, namespace: str, kind: str, name: str = NAME) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        cluster.kubectl(
            "get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    return found


def owners(obj: dict[str, Any], path: tuple[str, ...]) -> set[str]:
    """The field managers that own `path` (e.g. ("f:spec", "f:replicas")) of the object."""
    found = set()
    for entry in obj["metadata"].get("managedFields") or []:
        fields = entry.get("fieldsV1") or {}
        for key in path:
            fields = fields.get(key) if isinstance(fields, dict) else None
            if fields is None:
                break
        else:
            found.add(entry["manager"])
    return found


def replicas(cluster: local.Cluster, namespace: str) -> int:
    return int(get(cluster, namespace, "deployment")["spec"]["replicas"])


def engine_args(cluster: local.Cluster, namespace: str) -> list[str]:
    deployment = get(cluster, namespace, "deployment")
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_resyncing_the_cr_from_git_never_resets_the_operators_replicas(
    cluster: local.Cluster, namespace: str, operator: Operator
) -> None:
    sync(cluster, in_git(namespace))
    wait.eventually(
        lambda: replicas(cluster, namespace) == 1,
        "the engine Deployment at 1 replica",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    # Git raises the floor: the operator scales to it, under its scale field manager.
    sync(cluster, in_git(namespace, min_replicas=3))
    wait.eventually(
        lambda: replicas(cluster, namespace) == 3,
        "the operator to scale to 3",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    deployment = get(cluster, namespace, "deployment")
    assert owners(deployment, ("f:spec", "f:replicas")) == {"kvscale-autoscaler"}
    assert owners(deployment, ("f:spec", "f:template")) == {"kvscale-operator"}

    # Git lowers the floor again, and syncs (twice, as a tool does): the count the operator
    # holds (3; nothing in Git) stays, while the change itself is taken.
    sync(cluster, in_git(namespace, min_replicas=1))
    sync(cluster, in_git(namespace, min_replicas=1))

    def floor_seen() -> bool:
        cr = get(cluster, namespace, "infd")
        observed = (cr.get("status") or {}).get("observedGeneration")
        return bool(observed == cr["metadata"]["generation"])

    wait.eventually(
        floor_seen,
        "the operator to reconcile the new generation",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    assert replicas(cluster, namespace) == 3
    cr = get(cluster, namespace, "infd")
    assert owners(cr, ("f:spec", "f:scaling", "f:minReplicas")) == {GITOPS}
    spec_owners = {
        entry["manager"]
        for entry in cr["metadata"]["managedFields"]
        if "f:spec" in (entry.get("fieldsV1") or {})
    }
    assert spec_owners == {GITOPS}, "the operator must never write the CR's spec"
    assert "kvscale-operator" in owners(cr, ("f:status",))


def test_a_change_in_git_reaches_the_engine_deployment(
    cluster: local.Cluster, namespace: str, operator: Operator
) -> None:
    sync(cluster, in_git(namespace, max_num_seqs=256))
    wait.eventually(
        lambda: "256" in engine_args(cluster, namespace),
        "the engine Deployment",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    sync(cluster, in_git(namespace, max_num_seqs=32))

    def applied() -> bool:
        args = engine_args(cluster, namespace)
        return args[args.index("--max-num-seqs") + 1] == "32"

    wait.eventually(
        applied, "the new maxNumSeqs in the engine's args", timeout_s=90, retry_on=wait.NOT_MADE_YET
    )


def test_a_field_the_user_owns_on_the_engine_deployment_survives_the_operator(
    cluster: local.Cluster, namespace: str, operator: Operator
) -> None:
    sync(cluster, in_git(namespace))
    wait.eventually(
        lambda: replicas(cluster, namespace) == 1,
        "the engine Deployment",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    # The user's own field, applied under the user's own manager.
    label = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace, "labels": {"team": "ml-platform"}},
    }
    sync(cluster, yaml.safe_dump(label), manager="platform-team")
    # Make the operator apply the Deployment again (a change in Git), and wait for it.
    sync(cluster, in_git(namespace, max_num_seqs=48))
    wait.eventually(
        lambda: "48" in engine_args(cluster, namespace),
        "the operator's next apply",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    deployment = get(cluster, namespace, "deployment")
    assert deployment["metadata"]["labels"]["team"] == "ml-platform"
    assert owners(deployment, ("f:metadata", "f:labels", "f:team")) == {"platform-team"}
    assert owners(deployment, ("f:spec", "f:template")) == {"kvscale-operator"}


def test_a_tool_applying_the_engine_replicas_is_refused_with_a_conflict(
    cluster: local.Cluster, namespace: str, operator: Operator
) -> None:
    sync(cluster, in_git(namespace))
    wait.eventually(
        lambda: replicas(cluster, namespace) == 1,
        "the engine Deployment",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    cluster.kubectl(
        "patch", "infd", NAME, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"scaling": {"minReplicas": 2}}}),
    )  # fmt: skip
    wait.eventually(
        lambda: replicas(cluster, namespace) == 2,
        "the operator to scale to 2",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    rendered_by_a_tool = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {"replicas": 1},
    }
    found = cluster.kubectl(
        "apply", "--server-side", f"--field-manager={GITOPS}", "-f", "-",
        input=yaml.safe_dump(rendered_by_a_tool), check=False,
    )  # fmt: skip
    assert found.returncode != 0
    # 'conflict with "kvscale-autoscaler": .spec.replicas' (after an apply of the field) or
    # '... "kvscale-autoscaler" using apps/v1: .spec.replicas' (after a patch of it).
    assert re.search(
        r'conflict with "kvscale-autoscaler"( using apps/v1)?: \.spec\.replicas', found.stderr
    )
    assert replicas(cluster, namespace) == 2
