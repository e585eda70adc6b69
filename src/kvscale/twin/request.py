"""One request inside the engine twin: its sizes, its progress, its blocks and its timestamps.

Token content is not modelled, only counts. Prefix sharing is modelled by block hashes: a
request may carry hashes for the leading full blocks of its prompt (e.g. from a trace, or a
shared system prompt). Like vLLM's chained block hashes, the hash of block `i` must name the
whole prefix up to the end of block `i`, so two requests share block `i` only if they share
every block before it too. Every other block gets a hash private to the request, which still
matters: a request preempted by recompute finds its own earlier blocks in the prefix cache.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Hashable


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # never scheduled yet
    RUNNING = "running"
    PREEMPTED = "preempted"  # preempted by recompute: back in the waiting queue, no blocks
    SWAPPED = "swapped"  # preempted by swap: back in the waiting queue, its KV in CPU blocks
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclasses.dataclass(eq=False)
class Request:
    """A request and its state. The scheduler and the cache manager mutate it in place.

    A request with `num_prompt_tokens` P and `max_tokens` M produces exactly M output tokens
    (the twin models `ignore_eos`): the first when its prefill completes, then one per decode
    step. The KV of the last output token is never computed, so it holds at most P + M - 1
    token slots.
    """

    request_id: str
    num_prompt_tokens: int
    max_tokens: int
    prompt_block_hashes: tuple[Hashable, ...] = ()
    arrival_time: float = 0.0  # set by the engine when the request is added

    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0  # tokens whose KV is in this request's GPU blocks
    num_output_tokens: int = 0
    num_preemptions: int = 0
    block_table: list[int] = dataclasses.field(default_factory=list)
    num_cached_blocks: int = 0  # leading blocks of block_table already in the prefix cache
    cpu_blocks: list[int] = dataclasses.field(default_factory=list)  # while swapped out
    num_swapped_tokens: int = 0  # tokens whose KV sits in cpu_blocks

    # When the request was first scheduled (admitted from the waiting queue); a preempted
    # request admitted again keeps it, as vLLM's `scheduled_ts` does (its queue time is the
    # first wait only).
    scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finish_time: float | None = None
    # Emission time of every output token, only when the engine records them (it costs one
    # float per token; aggregate latencies come from the step results instead).
    token_times: list[float] | None = None

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens so far: what a resumed request must have KV for."""
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def is_finished(self) -> bool:
        return self.status in (RequestStatus.FINISHED, RequestStatus.ABORTED)

    def block_hash(self, index: int) -> Hashable:
        """The hash of the request's full block `index` (prompt and output tokens alike)."""
        if index < len(self.prompt_block_hashes):
            return self.prompt_block_hashes[index]
        return (self.request_id, index)
