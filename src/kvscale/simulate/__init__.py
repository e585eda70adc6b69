"""`kvscale simulate`: replay a request trace against a simulated fleet of engine twins.

Pure, except `plot` (writes a PNG with matplotlib) and `command` (the CLI shell: reads the
trace, draws the progress bar, prints the table, writes JSON and the plot).

A discrete-event simulation on explicit time: a fleet of `kvscale.twin` engines that start
`startup_delay_s` after they are asked for, a gateway that routes every request to the least
loaded ready engine (by KV demand), and an autoscaling policy ticking on its own loop. Pods
asked to go stop taking requests, finish what they hold (drain) and cost GPU time until empty.

Modules, bottom up:
- `latency`: TTFT and inter-token latency records, percentiles, SLO attainment.
- `fleet`: pods (engine twin, start-up, drain, GPU time) and least-loaded routing.
- `hpa`: the Kubernetes HPA's replica calculation and default scaling behavior.
- `kpa`: Knative's KPA (stable and panic windows, rates).
- `policy`: the policy interface and the four policies: `kvscale` (the real
  `kvscale.scaling.decision.Autoscaler`, fed simulated sidecar reports through the
  operator's own adapter, `kvscale.adapter`),
  `hpa-cpu`, `keda-waiting`, `knative-concurrency`.
- `simulation`: the event loop and its `Result`.
- `table`: the results as a text table and as JSON-ready data.
"""
