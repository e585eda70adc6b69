"""The twin server's driver hands out each token when its modelled time has come, on a clock
the test moves by hand."""

from __future__ import annotations

import pytest

from kvscale.twinserver import driver, settings

ARGS = ["--model", "meta-llama/Meta-Llama-3-8B", "--num-gpu-blocks-override", "600",
        "--max-model-len", "4096", "--tick-ms", "10"]  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.t = 100.0  # wall clock at start; twin time starts at 0

    def __call__(self) -> float:
        return self.t


def make(*extra: str) -> tuple[driver.Twin, Clock]:
    clock = Clock()
    return driver.Twin(settings.parse([*ARGS, *extra]), clock=clock, wall=lambda: 0.0), clock


def test_tokens_are_handed_out_at_their_modelled_times_not_before() -> None:
    twin, clock = make()
    stream = twin.submit(num_prompt_tokens=512, max_tokens=5)
    clock.t += 1e-6
    twin.pump()  # the prefill step has started and ends in the future
    times = stream.request.token_times
    assert times == [stream.request.first_token_time]
    assert times[0] > 0
    assert stream.available == 0
    assert not stream.changed.is_set()
    clock.t = 100.0 + times[0]
    twin.pump()
    assert stream.available == 1
    assert stream.changed.is_set()
    while not stream.done:
        clock.t += 0.001
        twin.pump()
        due = sum(1 for t in stream.request.token_times or [] if t <= clock.t - 100.0)
        assert stream.available == due
    assert stream.available == 5
    assert twin.num_streams == 0  # a finished stream is forgotten


def test_a_busy_twin_sleeps_at_least_a_tick_and_an_idle_one_until_an_arrival() -> None:
    twin, clock = make()
    assert twin.pump() is None
    stream = twin.submit(num_prompt_tokens=64, max_tokens=50)
    delays = []
    while True:
        delay = twin.pump()
        if stream.done:
            break
        assert delay is not None
        delays.append(delay)
        clock.t += delay
    assert len(delays) > 10
    assert min(delays) >= 0.010
    assert delay is None  # all handed out: nothing to do until the next arrival


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_the_time_scale_runs_the_twin_faster_than_the_wall_clock(scale: float) -> None:
    twin, clock = make("--time-scale", str(scale))
    stream = twin.submit(num_prompt_tokens=128, max_tokens=20)
    start = clock.t
    while True:
        delay = twin.pump()
        if stream.done:
            break
        assert delay is not None
        clock.t += delay
    last_token = stream.request.token_times[-1]  # type: ignore[index]
    wall = clock.t - start
    assert last_token / scale <= wall < last_token / scale + 0.011


def test_a_cancelled_request_frees_its_blocks_and_counts_as_aborted() -> None:
    twin, clock = make()
    stream = twin.submit(num_prompt_tokens=1000, max_tokens=100)
    clock.t += 0.2
    twin.pump()
    assert twin.engine.metrics().kv_cache_usage > 0
    twin.cancel(stream)
    assert twin.engine.metrics().kv_cache_usage == 0
    assert twin.counters.finished["abort"] == 1
    assert twin.num_streams == 0


def test_abort_all_ends_every_live_stream() -> None:
    twin, clock = make()
    streams = [twin.submit(num_prompt_tokens=100, max_tokens=100) for _ in range(3)]
    clock.t += 0.05
    twin.pump()
    twin.abort_all()
    assert all(s.aborted and s.done and s.changed.is_set() for s in streams)
    assert twin.num_streams == 0
    assert twin.engine.metrics().num_requests_running == 0


def test_a_request_longer_than_the_model_allows_is_refused() -> None:
    twin, _ = make()
    with pytest.raises(ValueError, match="max_model_len"):
        twin.submit(num_prompt_tokens=4000, max_tokens=200)
