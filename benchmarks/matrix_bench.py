"""Benchmark: the scenario matrix, every policy against today's peers and the oracle.

Each scenario is a trace x load scale x (model, GPU, KV-cache dtype, context) run through
`kvscale simulate`'s own code (`command.evaluate`, the same path as the CLI) with every policy,
tuned by the one fair rule (`--calibrate`: a load test of one pod on the trace's mix; each
target is its signal at 70% of the pod's SLO capacity), starting with the pods the first
minute needs at that capacity, 1 to 64 pods, pods ready 60 s after they are asked for. Per
scenario it states what binds: the KV demand and the tokens/s of one pod at its SLO capacity
(KV binds when the pod runs out of KV cache, mean demand >= 0.7, before it runs out of
compute). Per run: GPU-hours, SLO attainment,
TTFT and ITL p50/p99, preemptions, scale actions and direction changes per hour, GPU-hours
over the lower bound (`oracle.bound`, over the load test's full-queue throughput).

    .venv/bin/python benchmarks/matrix_bench.py --quick   # a few minutes
    .venv/bin/python benchmarks/matrix_bench.py [--jobs N]  # the full matrix

Each finished load test and run is kept under $KVSCALE_CACHE/matrix/<digest of the
simulator's code>/ (the local stack's cache, ~/.cache/kvscale by default), so a run cut short
goes on where it stopped, and a rerun with the same code only re-prints and re-plots.

The Mooncake FAST'25 synthetic trace (kvcache-ai/Mooncake,
FAST25-release/traces/synthetic_trace.jsonl) ships with kvscale as the named trace `mooncake`
(src/kvscale/data/traces/, with its license); --mooncake PATH runs those scenarios on another
file in its format instead. The results name the file, not where it was read from.
Writes matrix_{quick,full}.md and .json under --out and a plot under --img.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import inspect
import io
import json
import multiprocessing
import pathlib
import pickle
import time
from collections.abc import Callable
from typing import TypeVar

from kvscale import trace, tracefile
from kvscale.localstack import paths
from kvscale.simulate import calibrate, command, latency, option, oracle, simulation, table

MOONCAKE = "mooncake"  # the shipped trace's name; stands for --mooncake in a scenario's flags
COMMON = ("--calibrate", "--calibrate-requests", "400", "--max-replicas", "64")
# KV demand at SLO capacity from which the KV cache binds: the load test's mean over the run,
# so at 0.7 the cache is full in every burst. Checked on the twin: where a scenario reads
# >= 0.7, fp8 KV (twice the tokens) raises the pod's capacity 1.9x; at 0.65 (conv on an L4),
# fp8 changes nothing: compute and memory bandwidth bind there.
KV_BINDS = 0.7
# `--phases N` runs every (scenario, policy) N times, the k-th with every arrival k x this
# much later. A policy's loop (1 s, 2 s, 5 s or 15 s), the gateway's 250 ms refresh and the
# oracle's 60 s buckets then meet the same traffic at other phases: a robust result should
# not care, and the spread over phases is how much one run per cell can be trusted. 1.7 s is
# a multiple of none of those periods.
PHASE_STEP_S = 1.7
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    flags: tuple[str, ...]


# MLPerf Inference's server-scenario limits for Llama-3.1-405B, its long-context (to 128k)
# benchmark: TTFT 6 s, time per output token 175 ms (loadgen/mlperf.conf). The 2 s / 100 ms SLO
# of the short traces is out of reach for a 40k-token prompt on one pod whatever the load.
LONG_SLO = ("--slo-ttft", "6", "--slo-itl", "0.175")
MOONCAKE_8B = ("--trace", MOONCAKE, "--model", "llama-3.1-8b", *LONG_SLO)
MOONCAKE_70B = (
    "--trace",
    MOONCAKE,
    "--model",
    "llama-3.1-70b",
    "--tensor-parallel",
    "4",
    *LONG_SLO,
)

# The conversation trace with every prompt and output 8 times longer (--token-scale 8: about
# 8k-token prompts, 2k-token answers): long-context conversations, where the KV cache binds.
LONG_CONV = ("--trace", "conv", "--token-scale", "8", "--model", "llama-3.1-8b", *LONG_SLO)

QUICK = (
    Scenario(
        "conv 5 min x4, Llama-3-8B, H100, KV auto",
        ("--trace", "conv", "--duration", "300", "--load-scale", "4"),
    ),
    Scenario(
        "conv tokens x8 5 min, Llama-3.1-8B, H100, KV auto",
        (*LONG_CONV, "--duration", "300"),
    ),
    Scenario(
        "Mooncake 5 min, Llama-3.1-8B 128k, H100, KV auto", (*MOONCAKE_8B, "--duration", "300")
    ),
)

# The long conversations over the trace's hour. The full matrix runs their first half hour
# (the trace's ramp up and down is in it): they are its slowest runs, about 3 core-minutes per
# policy for each 30 minutes of trace. `--only` still finds these by name.
LONG_CONV_HOURS = (
    Scenario("conv tokens x8 60 min, Llama-3.1-8B, H100, KV auto", LONG_CONV),
    Scenario(
        "conv tokens x8 60 min, Llama-3.1-8B, H100, KV fp8",
        (*LONG_CONV, "--kv-cache-dtype", "fp8"),
    ),
    Scenario("conv tokens x8 60 min, Llama-3.1-8B, H200, KV auto", (*LONG_CONV, "--gpu", "h200")),
)

FULL = (
    Scenario("conv 60 min x8, Llama-3-8B, H100, KV auto", ("--trace", "conv", "--load-scale", "8")),
    Scenario(
        "conv 60 min x8, Llama-3-8B, H100, KV fp8",
        ("--trace", "conv", "--load-scale", "8", "--kv-cache-dtype", "fp8"),
    ),
    Scenario("conv 60 min x1, Llama-3-8B, L4, KV auto", ("--trace", "conv", "--gpu", "l4")),
    Scenario(
        "conv 60 min x1, Llama-3-8B, L4, KV fp8",
        ("--trace", "conv", "--gpu", "l4", "--kv-cache-dtype", "fp8"),
    ),
    Scenario(
        "code 60 min x4, Llama-3-8B, L40S, KV auto",
        ("--trace", "code", "--load-scale", "4", "--gpu", "l40s"),
    ),
    *(
        Scenario(hour.name.replace("60 min", "30 min"), (*hour.flags, "--duration", "1800"))
        for hour in LONG_CONV_HOURS
    ),
    Scenario("Mooncake 17 min, Llama-3.1-8B 128k, H100, KV auto", MOONCAKE_8B),
    Scenario(
        "Mooncake 17 min, Llama-3.1-8B 128k, H100, KV fp8",
        (*MOONCAKE_8B, "--kv-cache-dtype", "fp8"),
    ),
    Scenario("Mooncake 17 min, Llama-3.1-8B 128k, H200, KV auto", (*MOONCAKE_8B, "--gpu", "h200")),
    Scenario("Mooncake 17 min, Llama-3.1-70B 128k, 4 x H100, KV auto", MOONCAKE_70B),
)


def _flags(scenario: Scenario, mooncake: str) -> list[str]:
    return [mooncake if f == MOONCAKE else f for f in scenario.flags]


def _load(
    flags: list[str], name: str, shift_s: float = 0.0
) -> tuple[argparse.Namespace, list[trace.TraceRequest]]:
    """The run's flags and requests, every arrival `shift_s` later (`--phases`)."""
    parser = argparse.ArgumentParser()
    option.add_arguments(parser)
    args = parser.parse_args([*flags, *COMMON, "--policy", name])
    requests = command.prepare(tracefile.load(tracefile.resolve(args.trace)), args)
    if shift_s:
        requests = [dataclasses.replace(r, arrival_s=r.arrival_s + shift_s) for r in requests]
    return args, requests


@functools.cache
def _code_key() -> str:
    """A digest of the code that makes a result: the kvscale package and the functions of this
    script that run a job (not its scenario tables or docs), so a finished run is reused only
    by the same code, and a scenario added to the tables leaves the others' runs valid."""
    digest = hashlib.sha256()
    package = pathlib.Path(simulation.__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    for function in (_load, load_test, _run):
        digest.update(inspect.getsource(function).encode())
    digest.update(repr((COMMON, KV_BINDS)).encode())
    return digest.hexdigest()[:16]


def _cached(kind: str, parts: list[object], work: Callable[[], T]) -> T:
    """`work()`, or what the same code returned for the same job before: finished work is
    kept outside the checkout, so a full matrix cut short (the machine taken back, a
    session's end) goes on where it stopped when run again."""
    key = hashlib.sha256(json.dumps([kind, *parts]).encode()).hexdigest()[:24]
    path = paths.cache_root() / "matrix" / _code_key() / f"{kind}-{key}.pickle"
    if path.exists():
        done: T = pickle.loads(path.read_bytes())
        return done
    result = work()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_bytes(pickle.dumps(result))
    partial.replace(path)
    return result


def load_test(job: tuple[Scenario, list[str]]) -> tuple[calibrate.Capacity, float]:
    """A scenario's load test and its pod's full-queue throughput (`calibrate.peak`), run
    once and shared by its policies' jobs."""

    def work() -> tuple[calibrate.Capacity, float]:
        args, requests = _load(job[1], "oracle")
        fleet = command.fleet_for(args)
        slo = latency.Slo(ttft_s=args.slo_ttft, itl_s=args.slo_itl)
        peak = calibrate.peak(requests, fleet, slo, num_requests=args.calibrate_requests)
        return command.load_test(args, requests), peak

    return _cached("load-test", [job[0].name, job[1]], work)


Job = tuple[Scenario, list[str], str, tuple[calibrate.Capacity, float], float]
"""(scenario, its flags, policy, its load test, arrivals shifted by this many seconds)."""


def run(job: Job) -> dict[str, object]:
    """One policy on one scenario, as JSON-ready data and the Result for the table."""
    return _cached("run", [job[0].name, job[1], job[2], job[4]], lambda: _run(job))


def _run(job: Job) -> dict[str, object]:
    scenario, flags, name, (found, peak), shift_s = job
    # The load test is the pod's, not the run's: one per scenario, whatever the phase.
    args, requests = _load(flags, name, shift_s)
    bound = oracle.bound(
        requests,
        tokens_per_second=peak,
        max_model_len=found.max_model_len,
        min_replicas=args.min_replicas,
        gpus_per_pod=command.fleet_for(args).gpus_per_pod,
    )
    # Every run starts with the pods the first minute needs at SLO capacity (the oracle's
    # first bucket), so that no policy pays for a cold start the trace does not have.
    first = oracle.plan(
        requests,
        tokens_per_second=found.at_capacity.tokens_per_s,
        max_model_len=found.max_model_len,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
    ).need(0.0)
    args.initial_replicas = first
    path = tracefile.resolve(args.trace)
    log = io.StringIO()
    started = time.perf_counter()
    made = command.evaluate(args, requests, log, log, capacity=found)
    assert made.capacity is not None  # --calibrate
    cap = made.capacity.at_capacity
    return {
        "scenario": scenario.name + (f" (arrivals +{shift_s:g} s)" if shift_s else ""),
        "base_scenario": scenario.name,
        "shift_s": shift_s,
        # The file's name only: where a user keeps the Mooncake trace is not a result.
        "trace": path.name,
        "flags": list(scenario.flags),
        "bound_gpu_hours": round(bound, 4),
        "peak_tokens_per_s": round(peak, 1),
        "num_requests": len(requests),
        "max_model_len": made.max_model_len,
        "initial_replicas": first,
        "capacity": {
            "rate_per_s": round(cap.rate_per_s, 3),
            "tokens_per_s": round(cap.tokens_per_s, 1),
            "kv_demand": round(cap.demand, 4),
            "kv_occupancy": round(cap.occupancy, 4),
            "slo_attainment": round(cap.attainment, 4),
            "slo_reachable": made.capacity.reachable,
        },
        "binds_on": "KV" if cap.demand >= KV_BINDS else "compute",
        "wall_s": round(time.perf_counter() - started, 1),
        "result": made.results[0],
        "log": log.getvalue(),
    }


def merge(runs: list[dict[str, object]]) -> list[dict[str, object]]:
    """One entry per scenario: its policies' rows, with GPU-hours over its bound."""
    scenarios: dict[object, list[dict[str, object]]] = {}
    for item in runs:
        scenarios.setdefault(item["scenario"], []).append(item)
    merged = []
    for items in scenarios.values():
        results = [item["result"] for item in items]
        assert all(isinstance(r, simulation.Result) for r in results)
        typed = [r for r in results if isinstance(r, simulation.Result)]
        bound = items[0]["bound_gpu_hours"]
        assert isinstance(bound, float)
        first = {k: v for k, v in items[0].items() if k not in ("result", "log", "wall_s")}
        merged.append(
            {
                **first,
                "wall_s": {str(i["result"].policy): i["wall_s"] for i in items},  # type: ignore[attr-defined]
                "table": table.render(typed, markdown=True, bound=bound),
                "results": [table.to_data(r, bound=bound) for r in typed],
                "log": str(items[0]["log"]).rsplit("\n", 2)[0]
                + "\n"
                + "".join(str(i["log"]).rstrip("\n").rsplit("\n", 1)[-1] + "\n" for i in items),
            }
        )
    return merged


def spread(done: list[dict[str, object]]) -> str:
    """The `--phases` summary: per scenario and policy, GPU-hours and SLO attainment as the
    mean with the lowest and highest over the phases; per phase, kvscale-slo's GPU-hours
    against hpa-cpu's in the same phase (the two meet the very same arrivals)."""
    cells: dict[tuple[str, str], dict[float, tuple[float, float]]] = {}
    for item in done:
        rows = item["results"]
        assert isinstance(rows, list)
        for row in rows:
            key = (str(item["base_scenario"]), str(row["policy"]))
            attained = row["latency"]["slo_attainment"] or 0.0
            shift = item["shift_s"]
            assert isinstance(shift, float | int)
            cells.setdefault(key, {})[float(shift)] = (float(row["gpu_hours"]), attained)

    def summary(values: list[float], form: str, unit: str = "") -> str:
        mean = sum(values) / len(values)
        low, high = min(values), max(values)
        return f"{mean:{form}}{unit} ({low:{form}}{unit} to {high:{form}}{unit})"

    lines = [
        "| scenario | policy | phases | GPU-h: mean (lowest to highest) | SLO attainment | "
        "GPU-h vs hpa-cpu in the same phase |",
        "|---|---|---|---|---|---|",
    ]
    for (scenario, policy), by_shift in cells.items():
        shifts = sorted(by_shift)
        hours = [by_shift[k][0] for k in shifts]
        slo = [100.0 * by_shift[k][1] for k in shifts]
        hpa = cells.get((scenario, "hpa-cpu"), {})
        paired = [by_shift[k][0] / hpa[k][0] - 1.0 for k in shifts if k in hpa and hpa[k][0]]
        versus = (
            summary([100.0 * d for d in paired], "+.0f", "%")
            if paired and policy != "hpa-cpu"
            else ""
        )
        lines.append(
            f"| {scenario} | {policy} | {len(shifts)} | {summary(hours, '.2f')} | "
            f"{summary(slo, '.2f', '%')} | {versus} |"
        )
    return "\n".join(lines) + "\n"


def _report(done: list[dict[str, object]], title: str, wall_s: float) -> str:
    walls = [item["wall_s"] for item in done]
    cpu_s = sum(float(s) for w in walls if isinstance(w, dict) for s in w.values())
    lines = [f"# {title}", ""]
    lines += [
        f"The runs took {cpu_s:,.0f} s of one core in all (load tests not counted); this "
        f"invocation {wall_s:,.0f} s wall (runs finished by an earlier one are read back).",
        "",
    ]
    lines += ["| scenario | binds on | KV demand at SLO capacity | tok/s at SLO capacity |"]
    lines += ["|---|---|---|---|"]
    for item in done:
        cap = item["capacity"]
        assert isinstance(cap, dict)
        lines.append(
            f"| {item['scenario']} | {item['binds_on']} | {cap['kv_demand']:.3f} | "
            f"{cap['tokens_per_s']:,.0f} |"
        )
    for item in done:
        lines += [
            "",
            f"## {item['scenario']}",
            "",
            f"trace: `{item['trace']}`, {item['num_requests']} requests, "
            f"seconds to simulate per policy (load test included): {item['wall_s']}",
            "",
            str(item["table"]),
        ]
    return "\n".join(lines) + "\n"


def _plot(done: list[dict[str, object]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(done))  # a grid: twelve panels in one row cannot be read
    lines = -(-len(done) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5 * columns, 4 * lines), squeeze=False)
    for ax in axes.flat[len(done) :]:
        ax.set_visible(False)
    for ax, item in zip(axes.flat, done, strict=False):
        rows = item["results"]
        assert isinstance(rows, list)
        names = [r["policy"] for r in rows]
        ratios = [r["gpu_hours_over_bound"] or 0.0 for r in rows]
        met = [r["latency"]["slo_attainment"] or 0.0 for r in rows]
        colors = ["tab:green" if m >= 0.99 else "tab:red" for m in met]
        ax.barh(names, ratios, color=colors)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"{item['scenario']}\n(binds on {item['binds_on']})", fontsize=8)
        ax.set_xlabel("GPU-hours / bound (green: SLO >= 99%)")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick subset")
    parser.add_argument(
        "--mooncake",
        default=MOONCAKE,
        help="a trace in the Mooncake format for the Mooncake scenarios (default: the shipped "
        "synthetic trace)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="(scenario, policy) runs in parallel")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--img", default="docs/img")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="run the scenarios whose name contains this (repeat for several); the results "
        "go to matrix_{quick,full}_slice.* so the committed tables stay whole",
    )
    parser.add_argument(
        "--policy",
        action="append",
        choices=option.POLICIES,
        default=[],
        help="run only this policy (repeat for several); default: every policy",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a policy setting for every run, as kvscale simulate --set (for example "
        "slo.percentile=99); a run with it is a slice",
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=1,
        help=f"run each (scenario, policy) this many times, the k-th with every arrival "
        f"k x {PHASE_STEP_S} s later, and print the spread (a run with more than one is a slice)",
    )
    args = parser.parse_args(argv)
    if args.phases < 1:
        parser.error(f"--phases = {args.phases}, must be >= 1")

    def matching(scenarios: tuple[Scenario, ...]) -> list[Scenario]:
        return [s for s in scenarios if not args.only or any(p in s.name for p in args.only)]

    # A name that no scenario of the matrix has may be one of the longer runs kept by name.
    chosen = matching(QUICK if args.quick else FULL) or matching(LONG_CONV_HOURS)
    policies = args.policy or list(option.POLICIES)
    jobs = []
    for scenario in chosen:
        flags = _flags(scenario, args.mooncake)
        jobs.append((scenario, [*flags, *(f"--set={pair}" for pair in args.set)]))
    started = time.perf_counter()
    with multiprocessing.Pool(max(1, args.jobs)) as pool:
        found = pool.map(load_test, jobs, chunksize=1)
        runs: list[Job] = [
            (scenario, flags, name, capacity, round(k * PHASE_STEP_S, 3))
            for (scenario, flags), capacity in zip(jobs, found, strict=True)
            for name in policies
            for k in range(args.phases)
        ]
        done = merge(pool.map(run, runs, chunksize=1))
    wall = time.perf_counter() - started
    sliced = bool(args.only or args.policy or args.set or args.phases > 1)
    kind = ("quick" if args.quick else "full") + ("_slice" if sliced else "")
    if args.phases > 1:
        kind += f"_phases{args.phases}"
    for item in done:
        print(f"\n== {item['scenario']} (binds on {item['binds_on']}) ==")
        print(item["log"], end="")
        print(item["table"], end="")
    print(f"\nmatrix ({kind}): {len(done)} scenarios in {wall:.0f} s wall, {args.jobs} jobs")
    report = _report(done, f"Scenario matrix ({kind})", wall)
    if args.phases > 1:
        summary = spread(done)
        print(summary, end="")
        report += f"\n## Spread over {args.phases} phases (arrivals + k x {PHASE_STEP_S} s)\n\n"
        report += summary
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"matrix_{kind}.md").write_text(report)
    (out / f"matrix_{kind}.json").write_text(
        json.dumps({"wall_s": round(wall, 1), "scenarios": done}, indent=1) + "\n"
    )
    if args.img:  # "": no plot (a machine without matplotlib)
        img = pathlib.Path(args.img)
        img.mkdir(parents=True, exist_ok=True)
        _plot(done, img / f"matrix_{kind}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
