"""`kvscale simulate` on a slice of a shipped Azure trace: the table, the JSON and the PNG."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys


def test_simulate_prints_the_table_and_writes_the_plot(tmp_path: pathlib.Path) -> None:
    plot, report = tmp_path / "timeline.png", tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvscale.cli",
            "simulate",
            "--trace",
            "conv",
            "--duration",
            "240",
            "--load-scale",
            "2",
            "--max-replicas",
            "4",
            "--plot",
            str(plot),
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        # Outside the checkout: the named traces ship with the package, nothing beside it.
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("policy"))
    assert "GPU-h" in header
    assert "SLO" in header
    for name in ("kvscale", "hpa-cpu", "keda-waiting", "knative-concurrency"):
        assert any(line.startswith(name + " ") for line in lines), done.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(report.read_text())
    assert [r["policy"] for r in data["results"]] == [
        "kvscale",
        "hpa-cpu",
        "keda-waiting",
        "knative-concurrency",
    ]
    assert all(r["latency"]["num_requests"] == data["num_requests"] for r in data["results"])
    assert all(r["gpu_hours"] > 0 for r in data["results"])


def test_a_bad_setting_is_a_clear_error() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvscale.cli",
            "simulate",
            "--trace",
            "conv",
            "--duration",
            "10",
            "--policy",
            "kvscale",
            "--set",
            "targetOccupancy=3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2
    assert "targetOccupancy = 3, must be at most 1.0" in done.stderr
