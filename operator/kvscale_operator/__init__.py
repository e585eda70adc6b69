"""The kvscale operator: InferenceDeployments into engine Deployments, and their replicas (kopf).

Packages, by job (each package's docstring says which of its modules do I/O):
- `reconciler`: renders and server-side applies a Deployment (engine and sidecar containers),
  a Service and a PodDisruptionBudget per InferenceDeployment, owned by the custom resource,
  puts them back when they drift, and reports the reconciler's status conditions.
- `autoscaler`: one gather -> decide -> act loop per InferenceDeployment. It sets the
  Deployment's replicas from the sidecars' reports (a patch of the Deployment under its own
  field manager, `kvscale-autoscaler`, not a write to its scale subresource; the decision is
  the pure `kvscale.scaling`, fed through `kvscale.adapter`) and writes the status fields it
  owns (`occupancy`, `lastScaleTime`, `scalingHistory`, `desiredReplicas`, its own condition
  types) through `kube.Kube.update_status`, which leaves every other field alone.
- `leadership`: one replica runs the handlers (a coordination.k8s.io Lease); every replica
  answers its probes.

Shared modules: `kube` (a thin lightkube client wrapper; I/O), `metrics` (the operator's
Prometheus registry and endpoint; I/O), `login` (credentials; I/O) and `config` (settings;
pure). On top: `handlers` (the kopf registrations) and `main` (`kvscale operator`). An
import-linter contract keeps these layers in this order (pyproject.toml).
"""
