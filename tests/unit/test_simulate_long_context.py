"""Long-context regressions: calibration counts the tokens the engines see, the context is a
flag, a trace the context would cut is refused, amplified copies can keep their own prefixes."""

from __future__ import annotations

import argparse
import io

import pytest

from kvscale import trace
from kvscale.simulate import calibrate, command, fleet, latency, option, policy, simulation
from kvscale.twin import profile


def _args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    option.add_arguments(parser)
    return parser.parse_args(["--trace", "conv", *flags])


LONG = [trace.TraceRequest(0.0, 20_000, 100)] * 4 + [trace.TraceRequest(0.0, 1_000, 100)] * 4


def test_calibration_counts_tokens_after_the_cut_to_the_context() -> None:
    settings = fleet.Settings(profile.get("h100-sxm", "llama-3-8b"))
    assert calibrate.context_length(settings) == 8192
    assert calibrate.seen_tokens(LONG, 8192) == [8192] * 4 + [1100] * 4
    reading = calibrate.measure(LONG, 1.0, settings, latency.Slo())
    result_tokens = reading.tokens_per_s * _duration(LONG, settings)
    # The uncut trace has 4 x 20,100 + 4 x 1,100 tokens; the engines see 4 x 8,192 + 4 x 1,100.
    assert result_tokens == pytest.approx(4 * 8192 + 4 * 1100)


def _duration(mix: list[trace.TraceRequest], settings: fleet.Settings) -> float:
    run = simulation.Settings(fleet=settings, min_replicas=1, max_replicas=1)
    return simulation.simulate(trace.steady(mix, 1.0), run, policy.Static()).duration_s


def test_a_long_context_profile_sees_the_whole_request() -> None:
    settings = command.fleet_for(_args("--model", "llama-3.1-8b", "--max-model-len", "32768"))
    assert calibrate.context_length(settings) == 32_768
    assert calibrate.seen_tokens(LONG, 32_768) == [20_100] * 4 + [1100] * 4


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--max-model-len", "32768"), r"--max-model-len = 32768, must be in \[2, 8192\]"),
        (("--model", "llama-3.1-8b", "--max-model-len", "200000"), r"\[2, 131072\]"),
        (("--max-model-len", "1"), "--max-model-len = 1"),
    ],
)
def test_a_context_beyond_the_model_is_refused(flags: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        command.fleet_for(_args(*flags))


def test_kv_dtype_and_gpu_flags_reach_the_profile() -> None:
    made = command.fleet_for(_args("--gpu", "h200", "--kv-cache-dtype", "fp8")).profile
    assert made.gpu is profile.H200
    assert made.kv_cache_dtype_bytes == 1


def test_a_trace_mostly_cut_by_the_context_is_refused() -> None:
    out = io.StringIO()
    with pytest.raises(ValueError, match=r"4 of 8 requests \(50.0%\).*--max-model-len"):
        command.check_cut(LONG, 8192, 0.01, profile.LLAMA_3_8B, out)
    command.check_cut(LONG, 8192, 0.5, profile.LLAMA_3_8B, out)
    assert "4 of 8 requests (50.0%) are longer than the 8192-token context" in out.getvalue()
    quiet = io.StringIO()
    command.check_cut(LONG, 32_768, 0.01, profile.LLAMA_3_1_8B, quiet)
    assert quiet.getvalue() == ""
    with pytest.raises(ValueError, match="--max-cut = 2"):
        command.check_cut(LONG, 8192, 2.0, profile.LLAMA_3_8B, out)


def test_amplified_copies_share_prefixes_unless_separated() -> None:
    reqs = [trace.TraceRequest(0.0, 64, 4, (1, 2, 3)), trace.TraceRequest(5.0, 64, 4, (1, 2))]
    shared = trace.amplify(reqs, 3)
    assert {req.prefix_block_hashes for req in shared} == {(1, 2, 3), (1, 2)}
    separate = trace.amplify(reqs, 3, separate_prefixes=True)
    assert separate[0].prefix_block_hashes == (1, 2, 3)  # copy 0 is the original
    firsts = {req.prefix_block_hashes for req in separate if len(req.prefix_block_hashes) == 3}
    assert len(firsts) == 3  # every copy its own namespace
    # Within a copy, what the originals shared stays shared.
    for copy in range(3):
        long, short = (trace.namespaced(h, copy) for h in ((1, 2, 3), (1, 2)))
        assert long[:2] == short
    # Deterministic: the same input gives the same hashes.
    assert trace.amplify(reqs, 3, separate_prefixes=True) == separate


def test_the_cli_separates_amplified_prefixes_by_default() -> None:
    assert _args().amplify_prefixes == "separate"
    reqs = [trace.TraceRequest(0.0, 64, 4, (7, 8))]
    shaped = command.prepare(reqs, _args("--load-scale", "2"))
    assert len({req.prefix_block_hashes for req in shaped}) == 2
    kept = command.prepare(reqs, _args("--load-scale", "2", "--amplify-prefixes", "shared"))
    assert len({req.prefix_block_hashes for req in kept}) == 1


def test_what_if_changes_only_the_named_flags() -> None:
    base = _args("--gpu", "h100", "--model", "llama-3.1-8b")
    other = command.changed(base, ["kv-cache-dtype=fp8", "gpu=h200", "max-model-len=32768"])
    assert (other.kv_cache_dtype, other.gpu, other.max_model_len) == ("fp8", "h200", 32768)
    assert (base.kv_cache_dtype, base.gpu, base.max_model_len) == ("auto", "h100", None)
    assert other.model == base.model


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("gpu", "must be KEY=VALUE"),
        ("vram=80", "KEY one of gpu"),
        ("gpu=b200", "--what-if gpu = 'b200'"),
        ("kv-cache-dtype=int4", "--what-if kv-cache-dtype = 'int4'"),
        ("max-model-len=long", "--what-if max-model-len = 'long', must be an integer"),
    ],
)
def test_a_bad_what_if_is_named(pair: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        command.changed(_args(), [pair])


def test_what_if_prints_the_gpu_hours_difference_per_policy() -> None:
    reqs = [trace.TraceRequest(float(i), 2000, 50) for i in range(30)]
    out = io.StringIO()
    base = command.evaluate(_args("--policy", "static", "--model", "llama-3.1-8b"), reqs, out, out)
    fp8_args = command.changed(_args("--policy", "static", "--model", "llama-3.1-8b"), ["gpu=h200"])
    other = command.evaluate(fp8_args, reqs, out, out)
    text = command.difference(base, other, "gpu=h200")
    assert text.startswith("what-if gpu=h200: GPU-hours at the SLO, baseline -> changed")
    (row,) = text.splitlines()[1:]
    assert row.split()[0] == "static"
    # One static pod either way: the same GPU-hours to the precision of the run's end.
    assert f"{base.results[0].gpu_hours:7.2f} -> {other.results[0].gpu_hours:7.2f}" in row


def test_token_scale_makes_a_long_context_trace_without_prefix_hashes() -> None:
    reqs = [trace.TraceRequest(0.0, 1000, 200, (1, 2)), trace.TraceRequest(1.0, 30_000, 10)]
    scaled = command.prepare(reqs, _args("--token-scale", "8"))
    assert [(r.prompt_tokens, r.output_tokens) for r in scaled] == [(8000, 1600), (131_072, 80)]
    assert all(r.prefix_block_hashes == () for r in scaled)
