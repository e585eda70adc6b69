"""kvscale: scale LLM inference on Kubernetes by live KV-cache block occupancy.

Subpackages: `api` (the InferenceDeployment's typed models and CRD; pure), `localstack` (a real
local Kubernetes control plane, its real node and the engine environment; I/O), `cli` (the `kvscale`
command). The operator and the engine sidecar live in `kvscale_operator` and `kvscale_sidecar`.
"""
