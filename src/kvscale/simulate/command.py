"""`kvscale simulate`: the CLI shell around the simulation.

I/O: reads the trace, draws a progress bar on stderr (when it is a terminal, or with
`--progress`), prints the table, writes the JSON and the PNG. Everything it runs is pure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from kvscale import extra, trace, tracefile
from kvscale.simulate import calibrate, fleet, latency, option, oracle, simulation, table
from kvscale.simulate import policy as policy_
from kvscale.twin import engine, profile


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


TOKEN_SCALE_LIMIT = 131_072  # the longest context of the models offered


def prepare(
    requests: Sequence[trace.TraceRequest], args: argparse.Namespace
) -> list[trace.TraceRequest]:
    """The trace as the flags shape it: the first --duration seconds, compressed, tokens
    scaled, amplified."""
    reqs = list(requests)
    if args.duration is not None:
        reqs = trace.window(reqs, 0.0, args.duration)
    if args.time_scale != 1.0:
        reqs = trace.compress(reqs, args.time_scale)
    if args.token_scale != 1.0:
        # Scaled prompts no longer match the blocks their hashes named: drop the hashes.
        scaled = trace.scale_tokens(
            reqs, args.token_scale, max_prompt=TOKEN_SCALE_LIMIT, max_output=TOKEN_SCALE_LIMIT
        )
        reqs = [dataclasses.replace(req, prefix_block_hashes=()) for req in scaled]
    if args.load_scale != 1:
        reqs = trace.amplify(
            reqs, args.load_scale, separate_prefixes=args.amplify_prefixes == "separate"
        )
    return reqs


def fleet_for(args: argparse.Namespace) -> fleet.Settings:
    """The pods the flags describe: GPU, model, tensor parallelism, KV dtype, context."""
    gpu_profile = profile.get(
        option.GPUS[args.gpu], args.model, args.tensor_parallel, args.kv_cache_dtype
    )
    limit = gpu_profile.model.max_position_embeddings
    context = args.max_model_len
    if context is not None and not 1 < context <= limit:
        raise ValueError(
            f"--max-model-len = {context}, must be in [2, {limit}] ({args.model}'s "
            f"max_position_embeddings; the llama-3.1-* models allow 131072)"
        )
    config = engine.EngineConfig(max_model_len=context)
    return fleet.Settings(profile=gpu_profile, engine=config, startup_delay_s=args.startup_delay)


def check_cut(
    requests: Sequence[trace.TraceRequest],
    max_model_len: int,
    max_share: float,
    model: profile.Model,
    out: TextIO,
) -> None:
    """Say how many requests the context cuts, and refuse when they are more than
    `max_share` of the trace: a silently cut long-context trace is another trace."""
    if not 0 <= max_share <= 1:
        raise ValueError(f"--max-cut = {max_share}, must be in [0, 1]")
    cut = simulation.count_cut(requests, max_model_len)
    if not cut:
        return
    share = cut / len(requests)
    message = (
        f"{cut} of {len(requests)} requests ({100 * share:.1f}%) are longer than the "
        f"{max_model_len}-token context and are cut to fit it"
    )
    if share > max_share:
        raise ValueError(
            f"{message}: more than --max-cut = {max_share:g}; give a longer --max-model-len "
            f"({model.name} allows {model.max_position_embeddings}; the llama-3.1-* models "
            f"131072) or raise --max-cut to accept the cut trace"
        )
    out.write(message + "\n")


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


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Every chosen policy run on one trace and one fleet configuration."""

    results: tuple[simulation.Result, ...]
    capacity: calibrate.Capacity | None
    """The load test, when one ran (--calibrate, or for the oracle and static-peak)."""
    max_model_len: int
    slo: latency.Slo


def evaluate(
    args: argparse.Namespace,
    requests: Sequence[trace.TraceRequest],
    out: TextIO,
    err: TextIO,
    capacity: calibrate.Capacity | None = None,
) -> Evaluation:
    """Run every policy the flags choose on `requests` (already shaped by `prepare`);
    `capacity`, when given, is the load test of these flags and trace, already run."""
    overrides = _overrides(args.set)
    fleet_settings = fleet_for(args)
    context = calibrate.context_length(fleet_settings)
    check_cut(requests, context, args.max_cut, fleet_settings.profile.model, out)
    slo = latency.Slo(ttft_s=args.slo_ttft, itl_s=args.slo_itl)
    settings = simulation.Settings(
        fleet=fleet_settings,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        initial_replicas=args.initial_replicas,
        slo=slo,
    )
    faults = policy_.Faults(missing=args.fault_missing, stale=args.fault_stale, seed=args.seed)
    names = _policies(args)
    found = capacity
    if found is None and (args.calibrate or set(names) & set(oracle.NAMES)):
        found = load_test(args, requests)
    if found is not None:
        cap, at = found.at_capacity, found.at_target
        out.write(
            f"calibration (one pod, steady load of this trace's mix): SLO capacity "
            f"{cap.rate_per_s:.2f} req/s ({cap.tokens_per_s:.0f} tok/s, KV demand "
            f"{cap.demand:.3f}); at {100 * found.utilization:.0f}% of it: {at.inflight:.1f} in "
            f"flight, KV demand {at.demand:.3f}, waiting {at.waiting:.2f}\n"
            f"tokens/s counted as the engines see the requests: {found.num_cut} of the "
            f"{found.num_sampled} requests of the load test cut to the {found.max_model_len}-"
            f"token context\n"
        )
        if not found.reachable:
            out.write(
                f"warning: one pod meets the SLO for only {100 * cap.attainment:.1f}% of this "
                f"mix's requests even at {cap.rate_per_s:.2f} req/s, under the "
                f"{100 * found.attainment:g}% the load test asks for: the SLO is out of reach "
                f"for these requests on this pod whatever the load (long prompts: TTFT), so "
                f"the calibrated targets and the oracle mean little; loosen --slo-ttft or "
                f"--slo-itl\n"
            )
    if args.calibrate and found is not None:
        chosen = {**calibrate.recommended(found), **calibrate.baseline_targets(found)}
        out.write(
            "calibrated targets: "
            + ", ".join(f"{key}={value}" for key, value in chosen.items())
            + f"\nfor the InferenceDeployment: spec.scaling.targetTokensPerSecond: "
            f"{chosen['targetTokensPerSecond']}\n"
        )
        overrides = {**chosen, **overrides}
    policies: list[policy_.Policy] = []
    for name in names:
        if name in oracle.NAMES:
            assert found is not None  # measured above for these two
            policies.append(
                oracle.build(
                    name,
                    requests,
                    tokens_per_second=found.at_capacity.tokens_per_s,
                    max_model_len=context,
                    min_replicas=args.min_replicas,
                    max_replicas=args.max_replicas,
                    startup_delay_s=args.startup_delay,
                    overrides=policy_.overrides_for("oracle", overrides),
                )
            )
        else:
            policies.append(
                policy_.build(
                    name,
                    min_replicas=args.min_replicas,
                    max_replicas=args.max_replicas,
                    overrides=overrides,
                    faults=faults,
                    slo=slo,
                )
            )
    show_progress = args.progress or err.isatty()
    out.write(
        f"{len(requests)} requests over {requests[-1].arrival_s / 60:.1f} min"
        f" (time x{args.time_scale:g}, load x{args.load_scale}); {args.model} on "
        f"{args.tensor_parallel} x {args.gpu}, KV {args.kv_cache_dtype}, context {context}; "
        f"pods start in {args.startup_delay:g} s; "
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
    return Evaluation(tuple(results), found, context, slo)


def load_test(
    args: argparse.Namespace, requests: Sequence[trace.TraceRequest]
) -> calibrate.Capacity:
    """One pod's SLO capacity on the trace's mix, for the flags' fleet and SLO."""
    return calibrate.capacity(
        requests,
        fleet_for(args),
        latency.Slo(ttft_s=args.slo_ttft, itl_s=args.slo_itl),
        num_requests=args.calibrate_requests,
    )


WHAT_IF_KEYS = {
    "gpu": "gpu",
    "model": "model",
    "tensor-parallel": "tensor_parallel",
    "kv-cache-dtype": "kv_cache_dtype",
    "max-model-len": "max_model_len",
}


def changed(args: argparse.Namespace, pairs: Sequence[str]) -> argparse.Namespace:
    """The flags with --what-if KEY=VALUE changes applied (checked like the flags)."""
    values = vars(args).copy()
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or key not in WHAT_IF_KEYS:
            raise ValueError(
                f"--what-if {pair!r}: must be KEY=VALUE with KEY one of {', '.join(WHAT_IF_KEYS)}"
            )
        text = text.strip()
        if key == "gpu" and text not in option.GPUS:
            raise ValueError(f"--what-if gpu = {text!r}, must be one of {sorted(option.GPUS)}")
        if key == "model" and text not in option.MODELS:
            raise ValueError(f"--what-if model = {text!r}, must be one of {list(option.MODELS)}")
        if key == "kv-cache-dtype" and text not in option.KV_CACHE_DTYPES:
            raise ValueError(
                f"--what-if kv-cache-dtype = {text!r}, must be one of "
                f"{list(option.KV_CACHE_DTYPES)}"
            )
        value: object = text
        if key in ("tensor-parallel", "max-model-len"):
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"--what-if {key} = {text!r}, must be an integer") from None
        values[WHAT_IF_KEYS[key]] = value
    return argparse.Namespace(**values)


def difference(base: Evaluation, other: Evaluation, label: str) -> str:
    """Per policy: GPU-hours and SLO attainment in both runs, and the change in GPU-hours."""
    lines = [f"what-if {label}: GPU-hours at the SLO, baseline -> changed"]
    for a, b in zip(base.results, other.results, strict=True):
        change = (b.gpu_hours / a.gpu_hours - 1) * 100 if a.gpu_hours > 0 else float("nan")
        lines.append(
            f"  {a.policy:<20} {a.gpu_hours:7.2f} -> {b.gpu_hours:7.2f} GPU-h ({change:+.1f}%), "
            f"SLO {100 * a.latency.slo_attainment:.2f}% -> {100 * b.latency.slo_attainment:.2f}%"
        )
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path = tracefile.resolve(args.trace)
    requests = prepare(tracefile.load(path), args)
    if not requests:
        raise ValueError(f"{path}: no requests to replay (check --duration)")
    other_args = changed(args, args.what_if) if args.what_if else None
    out.write(f"trace {path}\n")
    made = evaluate(args, requests, out, err)
    results = list(made.results)
    out.write("\n" + table.render(results))
    if other_args is not None:
        label = ", ".join(args.what_if)
        out.write(f"\n--- what-if: {label} ---\n")
        other = evaluate(other_args, requests, out, err)
        out.write("\n" + table.render(list(other.results)) + "\n")
        out.write(difference(made, other, label))
    if args.json:
        payload = {
            "trace": str(path),
            "num_requests": len(requests),
            "time_scale": args.time_scale,
            "load_scale": args.load_scale,
            "gpu": args.gpu,
            "model": args.model,
            "tensor_parallel": args.tensor_parallel,
            "kv_cache_dtype": args.kv_cache_dtype,
            "max_model_len": made.max_model_len,
            "amplify_prefixes": args.amplify_prefixes,
            "startup_delay_s": args.startup_delay,
            "slo": {"ttft_s": made.slo.ttft_s, "itl_s": made.slo.itl_s},
            "results": [
                table.to_data(result, oracle=table.oracle_gpu_hours(results)) for result in results
            ],
        }
        text = json.dumps(payload, indent=2) + "\n"
        if args.json == "-":
            out.write(text)
        else:
            pathlib.Path(args.json).write_text(text)
    if args.plot:
        try:
            from kvscale.simulate import plot
        except ModuleNotFoundError as error:
            err.write(f"kvscale simulate: {extra.missing('plot', error)}\n")
            return 2
        title = f"{path.name}, load x{args.load_scale}, {args.model} on {args.gpu}"
        written = plot.write(results, pathlib.Path(args.plot), title=title)
        out.write(f"plot: {written}\n")
    return 0
