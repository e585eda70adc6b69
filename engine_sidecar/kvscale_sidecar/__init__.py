"""The engine sidecar: reads a vLLM engine's /metrics and serves its KV-cache occupancy report.

It runs in every engine pod, polls the engine every 250 ms, and serves `GET /v1/occupancy`
(the report defined in `kvscale.report`, the contract with the operator), `GET /metrics` (its
own Prometheus metrics), `GET /healthz` (liveness) and `GET /readyz` (the engine's readiness).

Pure modules (no I/O, time as an argument): `vllm_metrics` (vLLM's metric names and the parse
of its exposition text), `sampler` (scrape outcomes to reports, its counter rates from
`kvscale.rate`, shared with `kvscale simulate`), `exposition` (the sidecar's own metrics),
`settings` (flags and their validation).
I/O shells: `probe` (one HTTP scrape of the engine), `server` (the aiohttp endpoints) and
`main` (the poll loop and `kvscale sidecar`).
"""
