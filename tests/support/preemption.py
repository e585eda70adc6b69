"""The preemption tests' setting: a tiny engine twin that two requests fill. Pure.

7 GPU blocks of 4 tokens (block 0 reserved: 6 usable). A and B each have an 8-token prompt
(2 blocks). After 5 steps each holds 3 blocks and the pool is full; in step 6 A needs its 4th
block, so the last running request, B, is preempted: by recompute or by swap, as the engine
was built (test_preempt_recompute.py, test_preempt_swap.py).
"""

from __future__ import annotations

from kvscale.twin import engine, profile, request, scheduler

PROFILE = profile.get("h100-sxm", "llama-3-8b")
BLOCK_SIZE = 4


def tiny_engine(
    mode: scheduler.PreemptionMode,
    *,
    num_gpu_blocks: int = 7,
    num_cpu_blocks: int | None = None,
    enable_prefix_caching: bool = True,
) -> engine.EngineTwin:
    """The engine twin of the setting; `num_cpu_blocks` is the swap pool (swap mode only)."""
    config = engine.EngineConfig(
        block_size=BLOCK_SIZE,
        num_gpu_blocks_override=num_gpu_blocks,
        max_model_len=(num_gpu_blocks - 1) * BLOCK_SIZE,
        max_num_batched_tokens=64,
        max_num_seqs=4,
        enable_prefix_caching=enable_prefix_caching,
        preemption_mode=mode,
        num_cpu_blocks_override=num_cpu_blocks,
    )
    return engine.EngineTwin(config, PROFILE)


def run_steps(twin: engine.EngineTwin, count: int) -> list[engine.StepResult]:
    """Run `count` engine steps, each at the time the twin says its next step starts."""
    results = []
    for _ in range(count):
        start = twin.next_event_time()
        assert start is not None, "the twin has nothing to do"
        results.append(twin.step(start))
    return results


def two_requests(twin: engine.EngineTwin) -> tuple[request.Request, request.Request]:
    """A and B, added at time 0: 8 prompt tokens each, 9 and 10 tokens to generate."""
    a = request.Request("a", num_prompt_tokens=8, max_tokens=9)
    b = request.Request("b", num_prompt_tokens=8, max_tokens=10)
    twin.add_request(a, 0.0)
    twin.add_request(b, 0.0)
    return a, b
