"""The real vLLM CPU engine: built from the lock, serves the offline tiny model, reports its KV
cache, and stops without leaving processes behind."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from kvscale.localstack import engine_env

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

HOST = "127.0.9.1"  # a loopback address other than 127.0.0.1, as pod IPs are here
BLOCK_SIZE = 32
NUM_GPU_BLOCKS = 64
# vLLM reserves one block, and a request of max_model_len tokens must fit in the rest.
MAX_MODEL_LEN = 1024
# Generous: a cold start compiles the model; on 2 busy cores that took about a minute.
READY_DEADLINE_S = 600.0
STOP_DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def vllm_python() -> pathlib.Path:
    try:
        engine_env.ensure()
        return engine_env.vllm_python()
    except engine_env.EngineEnvError as error:
        pytest.fail(
            f"the vLLM CPU engine environment is not available: {error}. Build it with "
            "`make engine-env` (needs PyPI and about 6 GB of disk under $KVSCALE_CACHE)."
        )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _post_json(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        decoded: dict[str, object] = json.loads(response.read())
        return decoded


def _session_members(session_id: int) -> list[int]:
    """Processes still in the engine's session (it was started as a session leader)."""
    members = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the parenthesised command name: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session_id:
            members.append(int(entry.name))
    return members


def _log_tail(log: pathlib.Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def _engine(
    python: pathlib.Path, port: int, log: pathlib.Path
) -> Iterator[subprocess.Popen[bytes]]:
    argv = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        engine_env.TINY_MODEL,
        "--served-model-name",
        engine_env.TINY_MODEL,
        "--host",
        HOST,
        "--port",
        str(port),
        "--block-size",
        str(BLOCK_SIZE),
        "--num-gpu-blocks-override",
        str(NUM_GPU_BLOCKS),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--max-num-seqs",
        "8",
    ]
    env = {**os.environ, **engine_env.engine_environment()}
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        # Whatever happened in the test, leave nothing of the engine running.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_ready(process: subprocess.Popen[bytes], base: str, log: pathlib.Path) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vLLM exited with {process.returncode} while starting:\n{_log_tail(log)}")
        with contextlib.suppress(OSError):
            status, _ = _get(base + "/health")
            if status == 200:
                return
        time.sleep(1.0)
    pytest.fail(f"vLLM did not become healthy in {READY_DEADLINE_S:.0f} s:\n{_log_tail(log)}")


def _metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_tiny_model_resolves_offline_from_the_hub_cache(vllm_python: pathlib.Path) -> None:
    """`kvscale/tiny-llama` resolves like a real model id: from refs/main of the hub cache."""
    env = {**os.environ, **engine_env.engine_environment()}
    script = (
        "import huggingface_hub, sys; "
        "print(huggingface_hub.snapshot_download(sys.argv[1], local_files_only=False))"
    )
    result = subprocess.run(
        [str(vllm_python), "-c", script, engine_env.TINY_MODEL],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    snapshot = pathlib.Path(result.stdout.strip().splitlines()[-1])
    repo = engine_env.hf_home() / "hub" / "models--kvscale--tiny-llama"
    assert snapshot == repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
    assert (snapshot / "config.json").is_file()
    assert (snapshot / "model.safetensors").is_file()
    assert (snapshot / "tokenizer.json").is_file()


def test_engine_serves_reports_its_kv_cache_and_stops(
    vllm_python: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    port = _free_port(HOST)
    base = f"http://{HOST}:{port}"
    log = tmp_path / "vllm.log"
    with _engine(vllm_python, port, log) as process:
        _wait_ready(process, base, log)

        completion = _post_json(
            base + "/v1/completions",
            {
                "model": engine_env.TINY_MODEL,
                "prompt": "Hello, world",
                "max_tokens": 8,
                "ignore_eos": True,
            },
        )
        assert completion["model"] == engine_env.TINY_MODEL
        usage = completion["usage"]
        assert isinstance(usage, dict)
        assert usage["completion_tokens"] == 8
        choices = completion["choices"]
        assert isinstance(choices, list)
        assert choices[0]["finish_reason"] == "length"

        status, metrics = _get(base + "/metrics")
        assert status == 200
        usage_lines = _metric_lines(metrics, "vllm:kv_cache_usage_perc")
        assert usage_lines, "no vllm:kv_cache_usage_perc in /metrics"
        assert 0.0 <= float(usage_lines[0].rsplit(" ", 1)[1]) <= 1.0
        info_lines = _metric_lines(metrics, "vllm:cache_config_info")
        assert len(info_lines) == 1, "expected exactly one vllm:cache_config_info sample"
        assert f'num_gpu_blocks="{NUM_GPU_BLOCKS}"' in info_lines[0]
        assert f'block_size="{BLOCK_SIZE}"' in info_lines[0]

        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"vLLM ignored SIGTERM for {STOP_DEADLINE_S:.0f} s:\n{_log_tail(log)}")
        assert returncode == 0, _log_tail(log)
        # The engine core and worker are children in the same session; they must be gone too.
        deadline = time.monotonic() + STOP_DEADLINE_S
        while _session_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _session_members(process.pid) == [], "vLLM left processes running after SIGTERM"
