"""The scenario matrix's run cache (benchmarks/matrix_bench.py): a run that the same code
finished is read back, not run again; other work and other code are not confused with it."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "matrix_bench.py"


@pytest.fixture
def bench(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The runs go where the local stack's cache is ($KVSCALE_CACHE), here a temporary one.
    monkeypatch.setenv("KVSCALE_CACHE", str(tmp_path))
    spec = importlib.util.spec_from_file_location("matrix_bench", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "matrix_bench", module)
    spec.loader.exec_module(module)
    return module


def test_finished_work_is_read_back_not_done_again(
    bench: ModuleType, tmp_path: pathlib.Path
) -> None:
    calls: list[int] = []

    def work() -> dict[str, object]:
        calls.append(1)
        return {"gpu_hours": 1.5, "n": len(calls)}

    first = bench._cached("run", ["conv", ["--x"], "kvscale"], work)
    again = bench._cached("run", ["conv", ["--x"], "kvscale"], work)
    assert first == again == {"gpu_hours": 1.5, "n": 1}
    assert len(calls) == 1
    assert len(list((tmp_path / "matrix").glob("*/run-*.pickle"))) == 1


def test_other_jobs_and_other_code_are_run(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def work(tag: str) -> str:
        calls.append(tag)
        return tag

    assert bench._cached("run", ["conv", [], "kvscale"], lambda: work("a")) == "a"
    assert bench._cached("run", ["conv", [], "hpa-cpu"], lambda: work("b")) == "b"
    assert bench._cached("load-test", ["conv", []], lambda: work("c")) == "c"
    monkeypatch.setattr(bench, "_code_key", lambda: "changed")
    assert bench._cached("run", ["conv", [], "kvscale"], lambda: work("d")) == "d"
    assert calls == ["a", "b", "c", "d"]


def _item(scenario: str, shift: float, rows: list[tuple[str, float, float]]) -> dict[str, object]:
    return {
        "base_scenario": scenario,
        "shift_s": shift,
        "results": [
            {"policy": policy, "gpu_hours": hours, "latency": {"slo_attainment": attained}}
            for policy, hours, attained in rows
        ],
    }


def test_the_spread_over_phases_pairs_each_phase_with_hpa(bench: ModuleType) -> None:
    done = [
        _item("conv", 0.0, [("kvscale-slo", 3.0, 0.99), ("hpa-cpu", 4.0, 0.98)]),
        _item("conv", 1.7, [("kvscale-slo", 4.0, 0.97), ("hpa-cpu", 4.0, 1.0)]),
        _item("conv", 3.4, [("kvscale-slo", 2.0, 0.98), ("hpa-cpu", 5.0, 0.99)]),
    ]
    rows = bench.spread(done).splitlines()
    # Means over the phases with their extremes; the comparison is phase by phase
    # (-25%, 0%, -60%: mean -28%), not of the means (3.0 / 4.33 would be -31%).
    assert rows[2] == (
        "| conv | kvscale-slo | 3 | 3.00 (2.00 to 4.00) | 98.00% (97.00% to 99.00%) "
        "| -28% (-60% to +0%) |"
    )
    assert rows[3] == (
        "| conv | hpa-cpu | 3 | 4.33 (4.00 to 5.00) | 99.00% (98.00% to 100.00%) |  |"
    )
    assert len(rows) == 4


def test_a_phase_shifts_every_arrival_and_nothing_else(bench: ModuleType) -> None:
    flags = ["--trace", "conv", "--duration", "120"]
    _, plain = bench._load(flags, "hpa-cpu")
    _, later = bench._load(flags, "hpa-cpu", 1.7)
    assert len(plain) == len(later) > 0
    for before, after in zip(plain, later, strict=True):
        assert after.arrival_s == pytest.approx(before.arrival_s + 1.7)
        assert (after.prompt_tokens, after.output_tokens) == (
            before.prompt_tokens,
            before.output_tokens,
        )
