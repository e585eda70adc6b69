"""The kvscale operator: reconciles InferenceDeployments into engine Deployments (kopf).

For every InferenceDeployment it renders and server-side applies a Deployment (engine and
sidecar containers), a Service and a PodDisruptionBudget owned by the custom resource, puts
them back when they drift, and reports status conditions; one autoscale loop per
InferenceDeployment sets the Deployment's replicas (a patch of the Deployment under its own
field manager, `kvscale-autoscaler`, not a write to its scale subresource) from the sidecars'
reports.

Pure modules (no I/O, no kopf or Kubernetes client; an import-linter contract enforces it):
`engine_args` (vLLM arguments and the combinations the engine cannot run), `render`
(manifests, drift), `conditions` (status conditions), `status` (the status fields the
reconciler owns), `replicas` (the replica count the reconciler asks for), `quantity`
(Kubernetes quantities) and `config` (settings).

The autoscaler's pure parts: `observation` (Pod objects as the decision sees them; with
`kvscale.adapter` they become observations), `sampling` (which sidecars to ask), `inventory`
(each deployment's pods from the pod watch), `outcome` (the autoscaler's status fields and
conditions); the decision itself is `kvscale.scaling`. Leader election's pure part: `lease`.

I/O shells: `kube` (a thin lightkube client wrapper), `reconcile` (one reconcile pass, no
kopf), `autoscale` (one gather -> decide -> act loop per InferenceDeployment, started by the
watch events `handlers` registers), `collector` (the sidecars' reports over HTTP), `leader`
(the Lease), `health`, `handlers` (kopf registrations), `login`, `metrics` and `main`
(`kvscale operator`).

The autoscaler scales through `kube.Kube.scale_deployment` (field manager
`kvscale-autoscaler`, the same one the reconciler uses for replicas) and writes the status
fields it owns (`occupancy`, `lastScaleTime`, `scalingHistory`, `desiredReplicas`, its own
condition types) through `kube.Kube.update_status`, which leaves every other field alone.
"""
