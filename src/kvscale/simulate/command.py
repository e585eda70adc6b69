"""`kvscale simulate`: the CLI shell around the simulation.

I/O: reads the trace, draws a progress bar on stderr (when it is a terminal, or with
`--progress`), prints the table, writes the JSON and the PNG. Everything it runs is pure.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from kvscale import trace, tracefile
from kvscale.simulate import calibrate, fleet, latency, option, simulation, table
from kvscale.simulate import policy as policy_
from kvscale.twin import profile


class Progress:
    """A one-line progress bar on a terminal stream, redrawn in place."""

    def __init__(self, stream: TextIO, label: str, total_s: float) -> None:
        self.stream = stream
        self.label = label
        self.total_s = max(total_s, 1e-9)
        self.started = time.monotonic()

    def __call__(self, simulated_s: float) -> None:
        done = min(1.0, simulated_s / self.total_s)
        width = 30
        bar = "#" * round(done * width)
        elapsed = time.monotonic() - self.started
        self.stream.write(
            f"\r{self.label:<20} [{bar:<{width}}] {100 * done:5.1f}%  "
            f"{simulated_s / 60:6.1f}/{self.total_s / 60:.1f} min simulated  {elapsed:6.1f} s"
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: must be KEY=VALUE")
        result[key.strip()] = value.strip()
    return result


def prepare(
    requests: Sequence[trace.TraceRequest], args: argparse.Namespace
) -> list[trace.TraceRequest]:
    """The trace as the flags shape it: the first --duration seconds, compressed, amplified."""
    reqs = list(requests)
    if args.duration is not None:
        reqs = trace.window(reqs, 0.0, args.duration)
    if args.time_scale != 1.0:
        reqs = trace.compress(reqs, args.time_scale)
    if args.load_scale != 1:
        reqs = trace.amplify(reqs, args.load_scale)
    return reqs


def _policies(args: argparse.Namespace) -> list[str]:
    chosen = args.policy or ["all"]
    names: list[str] = []
    for name in chosen:
        for one in option.POLICIES if name == "all" else (name,):
            if one not in names:
                names.append(one)
    return names


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args, sys.stdout, sys.stderr)
    except (ValueError, trace.TraceError) as exc:
        print(f"kvscale simulate: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    overrides = _overrides(args.set)
    path = tracefile.resolve(args.trace)
    requests = prepare(tracefile.load(path), args)
    if not requests:
        raise ValueError(f"{path}: no requests to replay (check --duration)")
    gpu_profile = profile.get(option.GPUS[args.gpu], args.model, args.tensor_parallel)
    fleet_settings = fleet.Settings(profile=gpu_profile, startup_delay_s=args.startup_delay)
    slo = latency.Slo(ttft_s=args.slo_ttft, itl_s=args.slo_itl)
    settings = simulation.Settings(
        fleet=fleet_settings,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        initial_replicas=args.initial_replicas,
        slo=slo,
    )
    faults = policy_.Faults(missing=args.fault_missing, stale=args.fault_stale, seed=args.seed)
    if args.calibrate:
        found = calibrate.capacity(requests, fleet_settings, slo)
        cap, at = found.at_capacity, found.at_target
        out.write(
            f"calibration (one pod, steady load of this trace's mix): SLO capacity "
            f"{cap.rate_per_s:.2f} req/s ({cap.tokens_per_s:.0f} tok/s); at "
            f"{100 * found.utilization:.0f}% of it: {at.inflight:.1f} in flight, KV demand "
            f"{at.demand:.3f}, waiting {at.waiting:.2f}\n"
        )
        chosen = {**calibrate.recommended(found), **calibrate.baseline_targets(found)}
        out.write(
            "calibrated targets: "
            + ", ".join(f"{key}={value}" for key, value in chosen.items())
            + f"\nfor the InferenceDeployment: spec.scaling.targetTokensPerSecond: "
            f"{chosen['targetTokensPerSecond']}\n"
        )
        overrides = {**chosen, **overrides}
    names = _policies(args)
    policies = [
        policy_.build(
            name,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            overrides=overrides,
            faults=faults,
        )
        for name in names
    ]
    show_progress = args.progress or err.isatty()
    out.write(
        f"trace {path.name}: {len(requests)} requests over {requests[-1].arrival_s / 60:.1f} min"
        f" (time x{args.time_scale:g}, load x{args.load_scale}); {args.model} on "
        f"{args.tensor_parallel} x {args.gpu}; pods start in {args.startup_delay:g} s; "
        f"SLO: TTFT <= {slo.ttft_s:g} s and mean ITL <= {1000 * slo.itl_s:g} ms\n"
    )
    results = []
    for made in policies:
        progress = Progress(err, made.name, requests[-1].arrival_s) if show_progress else None
        bar: Callable[[float], None] | None = progress
        started_wall, started_cpu = time.perf_counter(), time.process_time()
        result = simulation.simulate(requests, settings, made, bar)
        wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
        if progress is not None:
            progress.close()
        out.write(f"{made.name}: simulated in {wall:.1f} s ({cpu:.1f} s CPU)\n")
        results.append(result)
    truncated = results[0].num_truncated
    if truncated:
        out.write(f"{truncated} requests longer than the context were cut to fit it\n")
    out.write("\n" + table.render(results))
    if args.json:
        payload = {
            "trace": str(path),
            "num_requests": len(requests),
            "time_scale": args.time_scale,
            "load_scale": args.load_scale,
            "gpu": args.gpu,
            "model": args.model,
            "startup_delay_s": args.startup_delay,
            "slo": {"ttft_s": slo.ttft_s, "itl_s": slo.itl_s},
            "results": [table.to_data(result) for result in results],
        }
        text = json.dumps(payload, indent=2) + "\n"
        if args.json == "-":
            out.write(text)
        else:
            pathlib.Path(args.json).write_text(text)
    if args.plot:
        from kvscale.simulate import plot

        title = f"{path.name}, load x{args.load_scale}, {args.model} on {args.gpu}"
        written = plot.write(results, pathlib.Path(args.plot), title=title)
        out.write(f"plot: {written}\n")
    return 0
