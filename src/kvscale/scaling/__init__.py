"""The scaling decision: from pod states and occupancy samples to desired replicas. Pure: no I/O.

Nothing here reads a clock, a socket or a file: time comes in as an explicit `now` (seconds on
one clock that never goes backwards), pods and their samples come in as plain frozen dataclasses,
and every answer is a value. The operator's autoscale loop is the thin shell around it: it
collects the sidecars' reports, adapts them into `demand.Observation`s, calls
`decision.Autoscaler.step(now, observations, current, manual)` and acts on the returned `Decision`.

Modules, bottom up:
- `arith`: ceil and floor that float noise cannot tip over an integer.
- `settings`: `ScalingSettings` (the CR's `spec.scaling` plus a few operator-level limits),
  `validate(raw)` with precise messages, `from_spec(models.Scaling)`.
- `window`: time-bucketed windowed average and windowed maximum.
- `demand`: one tick's per-pod demand against capacity, summed into the deployment's demand;
  missing, stale, unhealthy and invalid samples are classified and never count as idle.
- `account`: what each step of a decision found, as records, and those records in words.
- `decision`: the `Autoscaler` (stable and panic windows, panic mode, tolerance, rate limits,
  scale-down delay, min/max) and its `Decision` with a reason and its steps (`message` puts
  them in words).
- `capacity`: with `spec.slo`, each resource's capacity per pod (KV demand, tokens/s) learned
  from the pods' load and latency, with its confidence, source and what it may be used for.
- `headroom`: start-up time from the pods' own timestamps, the demand's growth rate, and the
  pods to ask for ahead of a ramp.

The algorithm and its defaults are explained in `docs/scaling.md`.
"""
