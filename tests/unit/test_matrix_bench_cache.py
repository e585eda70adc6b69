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
