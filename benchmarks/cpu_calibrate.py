"""Calibrate the twin's `cpu-calibrated` step time on the real vLLM CPU engine (tiny model).

    .venv/bin/python benchmarks/cpu_calibrate.py [--out benchmarks/results/cpu_calibrate.json]

Starts one real engine (`kvscale.localstack.engine_env`, on 127.0.9.2; about 3 GB and a minute
to start) with prefix caching off and a large KV cache (2048 blocks of 32), then runs a grid of
experiments. Each is `waves` rounds of `batch` identical-length requests sent at once (token-id
prompts of `prompt` tokens, `max_tokens` outputs, `ignore_eos`), one round after the other;
its measurement is the wall time from sending a round to its last response, summed.

When every request of a round arrives at once, which steps the engine runs does not depend on
how long they take, so the twin's scheduler (the same FCFS, chunked-prefill, 2048-token budget
as vLLM's CPU build) lists the steps exactly; running it with one unit coefficient at a time
gives each round's sums of steps, tokens, sequences and attention pairs. A non-negative least
squares fit, relative (each experiment weighs by 1 / its wall time), of

    wall = per_round x rounds + sum over steps of
           (per_step + per_token x tokens + per_seq x sequences + per_pair x attention pairs)

gives the constants of `kvscale.twin.calibration` (`per_round` is the HTTP and frontend
latency of a round, outside the engine's steps, and is not part of the profile). The engine's
own step count (`vllm:iteration_tokens_total` count) is printed beside the twin's as a check
of the scheduler model. Prints each experiment measured vs fitted, and the constants block.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import math
import pathlib
import platform
import random
import sys

import aiohttp
import realengine

from kvscale.twin import engine, profile, request

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOST = "127.0.9.2"
ARGS = realengine.EngineArgs(
    block_size=32, num_gpu_blocks=2048, max_num_seqs=128, max_model_len=4096
)
FEATURES = ("rounds", "steps", "tokens", "seqs", "pairs")


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    batch: int
    prompt: int
    max_tokens: int
    waves: int


GRID = (
    Experiment("prefill 64", 1, 64, 1, 8),
    Experiment("prefill 512", 1, 512, 1, 6),
    Experiment("prefill 2000", 1, 2000, 1, 4),
    Experiment("decode b1", 1, 32, 128, 2),
    Experiment("decode b8", 8, 32, 128, 2),
    Experiment("decode b32", 32, 32, 128, 2),
    Experiment("decode b64", 64, 32, 128, 2),
    Experiment("decode b128", 128, 32, 128, 2),
    Experiment("long b4", 4, 1000, 64, 2),
    Experiment("long b16", 16, 1000, 64, 2),
    Experiment("mixed b96", 96, 256, 32, 2),
)


def twin_config(args: realengine.EngineArgs = ARGS) -> engine.EngineConfig:
    return engine.EngineConfig(
        block_size=args.block_size,
        num_gpu_blocks_override=args.num_gpu_blocks,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enable_prefix_caching=args.enable_prefix_caching,
    )


def twin_features(exp: Experiment, args: realengine.EngineArgs = ARGS) -> dict[str, float]:
    """Per-feature sums over the steps of all the experiment's rounds, from the twin."""
    sums: dict[str, float] = {"rounds": float(exp.waves)}
    units = {
        "steps": profile.LinearStepTime(1.0, 0.0, 0.0, 0.0),
        "tokens": profile.LinearStepTime(0.0, 1.0, 0.0, 0.0),
        "seqs": profile.LinearStepTime(0.0, 0.0, 1.0, 0.0),
        "pairs": profile.LinearStepTime(0.0, 0.0, 0.0, 1.0),
    }
    for name, unit in units.items():
        twin = engine.EngineTwin(
            twin_config(args), dataclasses.replace(profile.cpu_tiny_llama(), step_model=unit)
        )
        for index in range(exp.batch):
            twin.add_request(request.Request(f"r{index}", exp.prompt, exp.max_tokens), now=0.0)
        twin.advance_until(math.inf)
        sums[name] = twin.clock * exp.waves
        if name == "steps":
            sums["twin_steps"] = float(twin.num_steps_total * exp.waves)
    return sums


async def measure(session: aiohttp.ClientSession, base: str, exp: Experiment) -> dict[str, float]:
    rng = random.Random(f"{exp.name}")
    before = await realengine.scrape(session, base)
    wall = 0.0
    errors = 0
    for _ in range(exp.waves):
        prompts = [[rng.randrange(3, 320) for _ in range(exp.prompt)] for _ in range(exp.batch)]
        done = await asyncio.gather(
            *(realengine.complete(session, base, p, exp.max_tokens) for p in prompts)
        )
        errors += sum(1 for c in done if c.error or c.num_tokens != exp.max_tokens)
        wall += max(c.done for c in done) - min(c.sent for c in done)
    after = await realengine.scrape(session, base)
    if errors:
        raise SystemExit(f"{exp.name}: {errors} requests failed or came back short")

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    return {
        "wall_s": wall,
        "vllm_steps": delta("vllm:iteration_tokens_total_count"),
        "vllm_tokens": delta("vllm:iteration_tokens_total_sum"),
        "ttft_mean_s": delta("vllm:time_to_first_token_seconds_sum")
        / max(delta("vllm:time_to_first_token_seconds_count"), 1.0),
        "itl_mean_s": delta("vllm:inter_token_latency_seconds_sum")
        / max(delta("vllm:inter_token_latency_seconds_count"), 1.0),
    }


def _solve(rows: list[list[float]], targets: list[float]) -> list[float]:
    """Least squares by the normal equations (a handful of unknowns)."""
    n = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    b = [sum(r[i] * t for r, t in zip(rows, targets, strict=True)) for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda k: abs(a[k][col]))
        a[col], a[pivot] = a[pivot], a[col]
        b[col], b[pivot] = b[pivot], b[col]
        if abs(a[col][col]) < 1e-300:
            raise SystemExit("calibration: the experiments do not pin down every constant")
        for k in range(n):
            if k != col:
                factor = a[k][col] / a[col][col]
                a[k] = [x - factor * y for x, y in zip(a[k], a[col], strict=True)]
                b[k] -= factor * b[col]
    return [b[i] / a[i][i] for i in range(n)]


def fit(rows: list[dict[str, float]], walls: list[float]) -> dict[str, float]:
    """Non-negative relative least squares: drop the most negative feature until none is."""
    active = list(FEATURES)
    while True:
        # Scaling features to unit size keeps the normal equations well conditioned.
        scale = {f: max(abs(r[f]) for r in rows) or 1.0 for f in active}
        matrix = [[r[f] / scale[f] / w for f in active] for r, w in zip(rows, walls, strict=True)]
        solution = _solve(matrix, [1.0] * len(rows))
        coefficients = {f: c / scale[f] for f, c in zip(active, solution, strict=True)}
        negative = [f for f in active if coefficients[f] < 0]
        if not negative:
            return {f: coefficients.get(f, 0.0) for f in FEATURES}
        active.remove(min(negative, key=lambda f: coefficients[f]))


def predict(coefficients: dict[str, float], row: dict[str, float]) -> float:
    return sum(coefficients[f] * row[f] for f in FEATURES)


async def run(log_path: pathlib.Path) -> list[dict[str, float]]:
    results = []
    with realengine.running(HOST, ARGS, log_path) as real:
        timeout = aiohttp.ClientTimeout(total=600)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            # Warm-up: the first requests pay for lazy initialisation in the engine.
            await measure(session, real.base_url, Experiment("warm-up", 8, 64, 16, 2))
            for exp in GRID:
                measured = await measure(session, real.base_url, exp)
                print(f"# {exp.name}: {measured['wall_s']:.3f} s", flush=True)
                results.append(measured)
    return results


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument(
        "--out", type=pathlib.Path, default=ROOT / "benchmarks/results/cpu_calibrate.json"
    )
    cli.add_argument(
        "--log", type=pathlib.Path, default=pathlib.Path("/tmp/kvscale-calibrate-vllm.log")
    )
    options = cli.parse_args()

    features = [twin_features(exp) for exp in GRID]
    measured = asyncio.run(run(options.log))
    walls = [m["wall_s"] for m in measured]
    coefficients = fit(features, walls)

    print()
    print(
        f"{'experiment':<14} {'steps vLLM/twin':>16} {'wall s':>8} {'fit s':>8} {'error':>7}"
        f" {'TTFT ms':>8} {'ITL ms':>7}"
    )
    table = []
    for exp, row, m in zip(GRID, features, measured, strict=True):
        fitted = predict(coefficients, row)
        error = fitted / m["wall_s"] - 1
        print(
            f"{exp.name:<14} {m['vllm_steps']:>7.0f}/{row['twin_steps']:<8.0f} "
            f"{m['wall_s']:>8.3f} {fitted:>8.3f} {error:>+7.1%} "
            f"{m['ttft_mean_s'] * 1000:>8.1f} {m['itl_mean_s'] * 1000:>7.2f}"
        )
        table.append({**dataclasses.asdict(exp), **m, **row, "fit_s": fitted})
    rms = math.sqrt(sum((t["fit_s"] / t["wall_s"] - 1) ** 2 for t in table) / len(table))
    print(f"relative RMS error of the fit: {rms:.1%}")
    today = datetime.date.today().isoformat()
    machine = f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores"
    print()
    print("# --- paste into src/kvscale/twin/calibration.py ---")
    print(f'MEASURED_ON = "{today}"')
    print(f'MACHINE = "{machine}"')
    print(f"PER_STEP_S = {coefficients['steps']:.4g}")
    print(f"PER_TOKEN_S = {coefficients['tokens']:.4g}")
    print(f"PER_SEQ_S = {coefficients['seqs']:.4g}")
    print(f"PER_ATTENTION_PAIR_S = {coefficients['pairs']:.4g}")
    print(f"# per round (HTTP and frontend, not in the profile): {coefficients['rounds']:.4g} s")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(
        json.dumps(
            {
                "measured_on": today,
                "machine": machine,
                "engine_args": dataclasses.asdict(ARGS),
                "coefficients": coefficients,
                "relative_rms_error": rms,
                "experiments": table,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"# raw results: {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
