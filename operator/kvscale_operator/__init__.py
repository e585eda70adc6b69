"""The kvscale operator: reconciles InferenceDeployments into engine Deployments (kopf).

For every InferenceDeployment it renders and server-side applies a Deployment (engine and
sidecar containers), a Service and a PodDisruptionBudget owned by the custom resource, puts
them back when they drift, sets the Deployment's replica count through its scale subresource
and reports status conditions.

Pure modules (no I/O, no kopf or Kubernetes client; an import-linter contract enforces it):
`engine_args` (vLLM arguments and the combinations the engine cannot run), `render`
(manifests, drift), `conditions` (status conditions), `status` (the status fields the
reconciler owns), `replicas` (the replica count the reconciler asks for), `quantity`
(Kubernetes quantities) and `config` (settings).

I/O shells: `kube` (a thin lightkube client wrapper), `reconcile` (one reconcile pass, no
kopf), `handlers` (kopf registrations), `login`, `metrics` and `main` (`kvscale operator`).

The autoscaler (a later component) plugs in beside `reconcile`: it registers its per-resource
daemon in `handlers.register`, scales through `kube.Kube.scale_deployment` (field manager
`kvscale-autoscaler`, the same one the reconciler uses for replicas) and writes the status
fields it owns (`occupancy`, `lastScaleTime`, `scalingHistory`, `desiredReplicas`, its own
condition types) through `kube.Kube.update_status`, which leaves every other field alone.
"""
