"""Benchmark: kvscale against HPA-CPU, KEDA-waiting and Knative-KPA on the Azure traces, simulated.

Every run replays a trace against a fleet of Llama-3-8B-on-H100 engine twins (pods start in
60 s, 1 to 16 of them) under one policy, and reports GPU-hours, SLO attainment (TTFT <= 2 s and
mean ITL <= 100 ms), latency percentiles, preemptions and scale events.

Tuning, the same rule for every policy (docs/simulation.md, "Tuning"): a load test of one pod
on the trace's request mix finds its SLO capacity; each policy's per-pod target is its own
signal's value at a share of that load (Knative: the in-flight requests at 70%; kvscale's KV
variant: the KV demand at 70%). The two throughput signals, hpa-cpu's tokens/s and kvscale's
targetTokensPerSecond (beside the CRD's default targetOccupancy 0.7), are swept over 70, 80
and 90% of the tokens/s at capacity, so that they can be compared at equal GPU-hours. KEDA
keeps production-stack's chart default (5 waiting requests per pod): waiting stays near 0
below saturation, so it has no value "at 70% load" to calibrate to. kvscale also runs with
its CRD defaults.

Scenarios: each trace as it is (x1) and amplified (`trace.amplify`: N copies of every request
spread over 60 s, the same shape at N times the load) so that the fleet needs several pods.
Every run starts with the pods the first minute needs at 70% of capacity.

    .venv/bin/python benchmarks/simulate_bench.py [--jobs N] [--out benchmarks/results]

Prints the tables and the speed figure; writes simulate_bench.md and .json (and one PNG per
scenario, not committed) under --out. Reads the Azure traces shipped with kvscale.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import pathlib
import sys
import time
from collections.abc import Sequence

from kvscale import trace, tracefile
from kvscale.simulate import calibrate, fleet, latency, simulation, table
from kvscale.simulate import policy as policy_
from kvscale.twin import profile

SCENARIOS = (("conv", 1), ("conv", 8), ("code", 1), ("code", 4))
MAX_REPLICAS = 16
STARTUP_DELAY_S = 60.0
SLO = latency.Slo(ttft_s=2.0, itl_s=0.1)
UTILIZATION = 0.7


@dataclasses.dataclass(frozen=True)
class Variant:
    label: str
    policy: str
    overrides: tuple[tuple[str, str], ...] = ()
    calibrated: bool = False  # take the per-pod target from the load test
    utilization: float | None = None  # throughput targets at this share of capacity (else 0.7)


# kvscale's settings after this benchmark (docs/simulation.md, "What changed and why"): the
# calibrated target, scale-up at most 2x the ready pods (not 4x), queue pressure at 50 waiting.
TUNED = (("maxScaleUpRate", "2"), ("pressureWaitingRequests", "50"))
CALIBRATED = "calibrated"
# KV occupancy and token throughput, both calibrated (the throughput target is hpa-cpu's: 70%
# of the tokens/s one pod serves at its SLO capacity).
WITH_TOKENS = (("targetTokensPerSecond", CALIBRATED),)

# Throughput-target policies are swept over 70/80/90% of a pod's SLO capacity, so that they
# are compared where they spend the same GPU-hours, not only at one operating point.
VARIANTS = (
    Variant("kvscale (CRD defaults)", "kvscale"),
    Variant("kvscale (KV calibrated, tuned)", "kvscale", TUNED, calibrated=True),
    Variant("kvscale (KV + tokens 70%)", "kvscale", WITH_TOKENS, utilization=0.7),
    Variant("kvscale (KV + tokens 80%)", "kvscale", WITH_TOKENS, utilization=0.8),
    Variant("kvscale (KV + tokens 90%)", "kvscale", WITH_TOKENS, utilization=0.9),
    Variant("hpa-cpu (70%)", "hpa-cpu", calibrated=True, utilization=0.7),
    Variant("hpa-cpu (80%)", "hpa-cpu", calibrated=True, utilization=0.8),
    Variant("hpa-cpu (90%)", "hpa-cpu", calibrated=True, utilization=0.9),
    Variant("keda-waiting", "keda-waiting"),
    Variant("knative-concurrency", "knative-concurrency", calibrated=True),
)


def fleet_settings() -> fleet.Settings:
    return fleet.Settings(profile.get("h100-sxm", "llama-3-8b"), startup_delay_s=STARTUP_DELAY_S)


def calibrate_trace(name: str, utilization: float = UTILIZATION) -> tuple[str, calibrate.Capacity]:
    requests = tracefile.load(tracefile.resolve(name))
    return name, calibrate.capacity(requests, fleet_settings(), SLO, utilization=utilization)


def scenario_requests(name: str, load: int) -> list[trace.TraceRequest]:
    requests = tracefile.load(tracefile.resolve(name))
    return trace.amplify(requests, load) if load > 1 else requests


def initial_replicas(requests: Sequence[trace.TraceRequest], found: calibrate.Capacity) -> int:
    first_minute = sum(1 for req in requests if req.arrival_s < 60.0) / 60.0
    pods = math.ceil(first_minute / (UTILIZATION * found.at_capacity.rate_per_s))
    return min(MAX_REPLICAS, max(1, pods))


def overrides_for(variant: Variant, found: calibrate.Capacity) -> dict[str, str]:
    targets = calibrate.targets(found, variant.utilization)
    # An override whose value is "calibrated" takes the load test's value for that key.
    result = {
        key: targets[key] if value == CALIBRATED else value for key, value in variant.overrides
    }
    if variant.calibrated:
        prefix = {
            "kvscale": "targetOccupancy",
            "hpa-cpu": "hpa.",
            "knative-concurrency": "knative.",
        }
        key = prefix[variant.policy]
        for name, value in targets.items():
            if name == key or (key.endswith(".") and name.startswith(key)):
                result.setdefault(name, value)
    return result


@dataclasses.dataclass(frozen=True)
class Job:
    trace_name: str
    load: int
    variant: Variant
    overrides: tuple[tuple[str, str], ...]
    initial: int


def run_job(job: Job) -> tuple[Job, simulation.Result, float]:
    requests = scenario_requests(job.trace_name, job.load)
    settings = simulation.Settings(
        fleet_settings(),
        min_replicas=1,
        max_replicas=MAX_REPLICAS,
        initial_replicas=job.initial,
        slo=SLO,
    )
    made = policy_.build(
        job.variant.policy, min_replicas=1, max_replicas=MAX_REPLICAS, overrides=dict(job.overrides)
    )
    started = time.process_time()
    result = simulation.simulate(requests, settings, made)
    cpu = time.process_time() - started
    return job, dataclasses.replace(result, policy=job.variant.label), cpu


def speed(minimum: int) -> tuple[float, float, int, int, int]:
    """One hour of the conversation trace under kvscale's decision core, up to 16 replicas
    (at least `minimum` of them, to time a run that spreads the trace over many engines)."""
    requests = tracefile.load(tracefile.resolve("conv"))
    settings = simulation.Settings(
        fleet_settings(), min_replicas=minimum, max_replicas=MAX_REPLICAS
    )
    made = policy_.build("kvscale", min_replicas=minimum, max_replicas=MAX_REPLICAS)
    wall, cpu = time.perf_counter(), time.process_time()
    result = simulation.simulate(requests, settings, made)
    return (
        time.perf_counter() - wall,
        time.process_time() - cpu,
        len(requests),
        result.num_engine_steps,
        result.max_ready,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=POLICY[:KEY=VALUE,...][:calibrated]",
        help="run these instead of the standard variants (for exploring settings)",
    )
    parser.add_argument(
        "--scenario", action="append", default=[], metavar="TRACE:LOAD", help="e.g. conv:8"
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    parser.add_argument(
        "--utilization",
        type=float,
        default=UTILIZATION,
        help="the share of a pod's SLO capacity every calibrated target is set at (for sweeps; "
        "the starting fleet stays sized at 0.7)",
    )
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    variants = list(VARIANTS)
    if args.variant:
        variants = []
        for spec in args.variant:
            label, _, rest = spec.partition("=")
            parts = rest.split(":")
            calibrated = "calibrated" in parts[1:]
            pairs: list[tuple[str, str]] = []
            for part in parts[1:]:
                for item in part.split(",") if part != "calibrated" else ():
                    key, _, value = item.partition("=")
                    pairs.append((key, value))
            variants.append(Variant(label, parts[0], tuple(pairs), calibrated))
    scenarios: tuple[tuple[str, int], ...] = SCENARIOS
    if args.scenario:
        scenarios = tuple((s.split(":")[0], int(s.split(":")[1])) for s in args.scenario)

    speeds = []
    if not args.no_speed:
        for minimum in (1, MAX_REPLICAS):
            wall, cpu, count, steps, pods = speed(minimum)
            line = (
                f"speed: 1 h of the conversation trace ({count} requests), kvscale, "
                f"{minimum} to {MAX_REPLICAS} replicas (ran on {pods}, {steps:,} engine steps): "
                f"{wall:.1f} s wall, {cpu:.1f} s CPU (one process, one core)"
            )
            print(line, flush=True)
            speeds.append(line)

    names = sorted({name for name, _ in scenarios})
    with multiprocessing.Pool(args.jobs) as pool:
        capacities = dict(
            pool.map(functools.partial(calibrate_trace, utilization=args.utilization), names)
        )
        for name in names:
            found = capacities[name]
            cap, at = found.at_capacity, found.at_target
            print(
                f"calibration {name}: one pod meets the SLO up to {cap.rate_per_s:.2f} req/s "
                f"({cap.tokens_per_s:.0f} tok/s, {cap.inflight:.1f} in flight, KV demand "
                f"{cap.demand:.3f}); at {found.utilization:.0%} of it: "
                f"{at.tokens_per_s:.0f} tok/s, {at.inflight:.1f} in flight, "
                f"KV demand {at.demand:.4f}, waiting {at.waiting:.2f}; "
                f"targets {calibrate.targets(found)}",
                flush=True,
            )
        jobs = []
        for name, load in scenarios:
            initial = initial_replicas(scenario_requests(name, load), capacities[name])
            for variant in variants:
                chosen = tuple(sorted(overrides_for(variant, capacities[name]).items()))
                jobs.append(Job(name, load, variant, chosen, initial))
        done = pool.map(run_job, jobs, chunksize=1)

    report = ["# kvscale simulate benchmark", "", *speeds, ""]
    data: dict[str, object] = {
        "model": "llama-3-8b",
        "gpu": "h100-sxm",
        "startup_delay_s": STARTUP_DELAY_S,
        "max_replicas": MAX_REPLICAS,
        "slo": dataclasses.asdict(SLO),
        "calibration": {
            name: dataclasses.asdict(found) | {"targets": calibrate.targets(found)}
            for name, found in capacities.items()
        },
        "scenarios": [],
    }
    scenario_data: list[dict[str, object]] = []
    for name, load in scenarios:
        rows = [
            (job, result, cpu)
            for job, result, cpu in done
            if (job.trace_name, job.load) == (name, load)
        ]
        results = [result for _, result, _ in rows]
        first = rows[0][0]
        heading = (
            f"{name} x{load}: {results[0].num_requests} requests, "
            f"{rows[0][1].num_truncated} cut to the context, start with {first.initial} pod(s)"
        )
        print("\n" + heading)
        print(table.render(results), end="", flush=True)
        report += [f"## {heading}", "", table.render(results, markdown=True)]
        scenario_data.append(
            {
                "trace": name,
                "load": load,
                "initial_replicas": first.initial,
                "results": [
                    table.to_data(result)
                    | {"overrides": dict(job.overrides), "cpu_s": round(cpu, 1)}
                    for job, result, cpu in rows
                ],
            }
        )
        if not args.no_plots:
            from kvscale.simulate import plot

            path = plot.write(
                results,
                out / f"simulate_{name}_x{load}.png",
                title=f"Azure {name} trace x{load}, Llama-3-8B on H100, pods start in 60 s",
            )
            print(f"plot: {path}")
    data["scenarios"] = scenario_data
    (out / "simulate_bench.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "simulate_bench.md").write_text("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
