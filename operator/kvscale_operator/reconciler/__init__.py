"""The reconciler: InferenceDeployments into engine Deployments, Services and PDBs.

Pure: `render` (the manifests and their drift), `engine_args` (vLLM's arguments and the
combinations the engine cannot run), `conditions` (status conditions, shared with the
autoscaler), `status` (the status fields the reconciler owns), `replicas` (the count it asks
for at creation), `quantity` (Kubernetes quantities). Does I/O: `reconcile` (one reconcile
pass through `kvscale_operator.kube`, no kopf).
"""
