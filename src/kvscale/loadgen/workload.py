"""A slice of a production trace, shaped to a small engine: the requests the demo sends. Pure.

`Plan` says which slice (`start_s` in the trace), for how long in wall time (`duration_s`),
how much faster than real time (`time_factor`) and with how many tokens (`token_factor`,
clamped so prompt + output fits the engine's context). `requests(trace, plan)` applies it with
`kvscale.trace`'s window, compress and scale_tokens. `prompt_ids` makes a request's prompt:
token ids drawn at random (seeded by the request's index) from the model's ordinary
vocabulary, so that lengths are exact and no two prompts share a prefix by accident (prefix
caching would otherwise hide KV demand the trace has).
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections.abc import Sequence

from kvscale import trace


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a trace is replayed. Validated on construction; errors name the field."""

    start_s: float
    """Where the slice begins, in trace seconds."""
    duration_s: float
    """Wall seconds of load: the slice is duration_s x time_factor trace seconds long."""
    time_factor: float
    """Trace seconds per wall second (2.0: twice the trace's request rate)."""
    token_factor: float
    """Prompt and output tokens are multiplied by this, then clamped."""
    max_prompt: int
    max_output: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(f"start_s = {self.start_s}: must be >= 0")
        for name in ("duration_s", "time_factor", "token_factor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} = {value}: must be a finite number > 0")
        for name in ("max_prompt", "max_output"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be >= 1")

    @property
    def trace_span_s(self) -> float:
        return self.duration_s * self.time_factor


@dataclasses.dataclass(frozen=True)
class Shape:
    """What a list of requests asks for, in numbers a reader can check against an engine."""

    count: int
    rate_per_s: float
    mean_prompt: float
    mean_output: float
    max_tokens: int
    """The largest prompt + output of any request."""


def requests(reqs: Sequence[trace.TraceRequest], plan: Plan) -> list[trace.TraceRequest]:
    """The plan's slice of `reqs`: arrivals in wall seconds from 0, tokens scaled and clamped."""
    sliced = trace.window(reqs, plan.start_s, plan.trace_span_s)
    if not sliced:
        raise ValueError(
            f"start_s = {plan.start_s}: the trace has no request in "
            f"[{plan.start_s}, {plan.start_s + plan.trace_span_s}) s"
        )
    faster = trace.compress(sliced, plan.time_factor)
    return trace.scale_tokens(
        faster, plan.token_factor, max_prompt=plan.max_prompt, max_output=plan.max_output
    )


def shape(reqs: Sequence[trace.TraceRequest], duration_s: float) -> Shape:
    if not reqs:
        return Shape(0, 0.0, 0.0, 0.0, 0)
    return Shape(
        count=len(reqs),
        rate_per_s=len(reqs) / duration_s,
        mean_prompt=statistics.fmean(r.prompt_tokens for r in reqs),
        mean_output=statistics.fmean(r.output_tokens for r in reqs),
        max_tokens=max(r.prompt_tokens + r.output_tokens for r in reqs),
    )


def prompt_ids(index: int, length: int, *, first_id: int, vocab_size: int, seed: int) -> list[int]:
    """`length` token ids in [first_id, vocab_size), the same for the same (seed, index)."""
    if length < 1:
        raise ValueError(f"length = {length}: must be >= 1")
    if not 0 <= first_id < vocab_size:
        raise ValueError(f"first_id = {first_id}: must be in [0, vocab_size = {vocab_size})")
    draw = random.Random(f"{seed}:{index}")
    return [draw.randrange(first_id, vocab_size) for _ in range(length)]
