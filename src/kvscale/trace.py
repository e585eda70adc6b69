"""Request traces: parse and transform. Pure (reading files is `kvscale.tracefile`'s job).

A trace is a list of `TraceRequest`s sorted by arrival time, times relative to the first
request. Two formats are read:

- CSV in the Azure LLM inference trace schema, `TIMESTAMP,ContextTokens,GeneratedTokens`, with
  timestamps like `2023-11-16 18:15:46.6805900` (the traces shipped in `kvscale/data/traces/`);
- JSONL, one object per line: `arrival_s`, `prompt_tokens`, `output_tokens` and an optional
  `prefix_block_hashes` (a list of integers, one per full KV block of the prompt's shared prefix).

The transforms (`window`, `compress`, `amplify`, `steady`, `scale_tokens`) return new lists and
never touch their input. `kvscale simulate` and the demo's load generator read trace files
through `kvscale.tracefile`, which parses them here.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from collections.abc import Iterable, Sequence

CSV_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


class TraceError(ValueError):
    """A trace that cannot be read; the message names the line and the field."""


@dataclasses.dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace.

    arrival_s: seconds after the trace's first request (>= 0).
    prompt_tokens: tokens of the prompt (the Azure trace's ContextTokens), >= 1.
    output_tokens: tokens generated (GeneratedTokens), >= 1.
    prefix_block_hashes: hashes of the prompt's leading full KV blocks that other requests may
        share (prefix caching); empty when the trace does not say.
    """

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_block_hashes: tuple[int, ...] = ()


def _positive_int(value: object, field: str, where: str) -> int:
    # bool is an int in Python; a trace with `true` tokens is garbage, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TraceError(f"{where}: {field} = {value!r}, must be an integer >= 1")
    if value < 1:
        raise TraceError(f"{where}: {field} = {value}, must be an integer >= 1")
    return value


def _parse_int_text(text: str, field: str, where: str) -> int:
    stripped = text.strip()
    try:
        value = int(stripped)
    except ValueError:
        raise TraceError(f"{where}: {field} = {stripped!r}, must be an integer >= 1") from None
    return _positive_int(value, field, where)


def _parse_timestamp(text: str, where: str) -> datetime.datetime:
    stripped = text.strip()
    try:
        moment = datetime.datetime.fromisoformat(stripped)
    except ValueError:
        raise TraceError(
            f"{where}: TIMESTAMP = {stripped!r}, must look like 2023-11-16 18:15:46.6805900"
        ) from None
    if moment.tzinfo is not None:
        # Mixing aware and naive times cannot be ordered; the Azure traces are naive UTC.
        moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return moment


def parse_csv(text: str) -> list[TraceRequest]:
    """Parse an Azure-schema CSV trace; sorted by time, relative to the first request."""
    lines = text.splitlines()
    if not lines or tuple(cell.strip() for cell in lines[0].split(",")) != CSV_HEADER:
        first = lines[0] if lines else ""
        raise TraceError(f"line 1: header = {first!r}, must be {','.join(CSV_HEADER)}")
    rows: list[tuple[datetime.datetime, int, int, int]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        where = f"line {number}"
        cells = line.split(",")
        if len(cells) != len(CSV_HEADER):
            raise TraceError(f"{where}: {len(cells)} fields, must be {len(CSV_HEADER)}: {line!r}")
        moment = _parse_timestamp(cells[0], where)
        prompt = _parse_int_text(cells[1], "ContextTokens", where)
        output = _parse_int_text(cells[2], "GeneratedTokens", where)
        rows.append((moment, number, prompt, output))
    if not rows:
        return []
    # Stable on equal timestamps: the file's order decides (the line number is the tiebreak).
    rows.sort()
    start = rows[0][0]
    return [
        TraceRequest((moment - start).total_seconds(), prompt, output)
        for moment, _, prompt, output in rows
    ]


def _hashes(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise TraceError(f"{where}: prefix_block_hashes = {value!r}, must be a list of integers")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TraceError(
                f"{where}: prefix_block_hashes has {item!r}, must be a list of integers"
            )
    return tuple(value)


def parse_jsonl(text: str) -> list[TraceRequest]:
    """Parse a JSONL trace; sorted by time, relative to the first request."""
    rows: list[tuple[float, int, TraceRequest]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{where}: not JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise TraceError(f"{where}: must be a JSON object, got {type(obj).__name__}")
        for field in ("arrival_s", "prompt_tokens", "output_tokens"):
            if field not in obj:
                raise TraceError(f"{where}: {field} is missing")
        unknown = sorted(set(obj) - {f.name for f in dataclasses.fields(TraceRequest)})
        if unknown:
            raise TraceError(f"{where}: unknown field {unknown[0]!r}")
        arrival = obj["arrival_s"]
        if (
            isinstance(arrival, bool)
            or not isinstance(arrival, int | float)
            or not math.isfinite(arrival)
        ):
            raise TraceError(f"{where}: arrival_s = {arrival!r}, must be a finite number")
        req = TraceRequest(
            float(arrival),
            _positive_int(obj["prompt_tokens"], "prompt_tokens", where),
            _positive_int(obj["output_tokens"], "output_tokens", where),
            _hashes(obj.get("prefix_block_hashes", []), where),
        )
        rows.append((req.arrival_s, number, req))
    if not rows:
        return []
    rows.sort(key=lambda row: (row[0], row[1]))
    start = rows[0][0]
    return [dataclasses.replace(req, arrival_s=req.arrival_s - start) for _, _, req in rows]


def to_jsonl(reqs: Iterable[TraceRequest]) -> str:
    """The JSONL form of a trace (what `parse_jsonl` reads back)."""
    lines = []
    for req in reqs:
        obj: dict[str, object] = {
            "arrival_s": req.arrival_s,
            "prompt_tokens": req.prompt_tokens,
            "output_tokens": req.output_tokens,
        }
        if req.prefix_block_hashes:
            obj["prefix_block_hashes"] = list(req.prefix_block_hashes)
        lines.append(json.dumps(obj))
    return "".join(line + "\n" for line in lines)


def window(reqs: Sequence[TraceRequest], start_s: float, duration_s: float) -> list[TraceRequest]:
    """The requests arriving in [start_s, start_s + duration_s), times relative to start_s."""
    if duration_s <= 0:
        raise ValueError(f"duration_s = {duration_s}, must be > 0")
    end = start_s + duration_s
    return [
        dataclasses.replace(req, arrival_s=req.arrival_s - start_s)
        for req in reqs
        if start_s <= req.arrival_s < end
    ]


def compress(reqs: Sequence[TraceRequest], time_factor: float) -> list[TraceRequest]:
    """The same requests arriving `time_factor` times faster (2.0: twice the rate)."""
    if not (time_factor > 0 and math.isfinite(time_factor)):
        raise ValueError(f"time_factor = {time_factor}, must be a finite number > 0")
    return [dataclasses.replace(req, arrival_s=req.arrival_s / time_factor) for req in reqs]


def amplify(
    reqs: Sequence[TraceRequest], copies: int, *, spread_s: float = 60.0
) -> list[TraceRequest]:
    """`copies` times the load with the same shape: copy j of every request arrives
    j x spread_s / copies seconds after the original (copy 0 is the original).

    It stands for a service `copies` times larger whose traffic rises and falls as this one's
    does on scales longer than `spread_s`; below that, bursts keep their size and come more
    often. The result is sorted by arrival (stable: copies of one instant keep trace order).
    """
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies = {copies!r}, must be an integer >= 1")
    if not (spread_s >= 0 and math.isfinite(spread_s)):
        raise ValueError(f"spread_s = {spread_s}, must be a finite number >= 0")
    out = [
        dataclasses.replace(req, arrival_s=req.arrival_s + j * spread_s / copies)
        for j in range(copies)
        for req in reqs
    ]
    out.sort(key=lambda req: req.arrival_s)
    return out


def steady(reqs: Sequence[TraceRequest], rate_per_s: float) -> list[TraceRequest]:
    """The same requests, in the same order, arriving evenly at `rate_per_s` from t = 0
    (for load tests of a trace's request mix)."""
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s = {rate_per_s}, must be a finite number > 0")
    return [
        dataclasses.replace(req, arrival_s=index / rate_per_s) for index, req in enumerate(reqs)
    ]


def scale_tokens(
    reqs: Sequence[TraceRequest],
    factor: float,
    *,
    max_prompt: int,
    max_output: int,
    min_tokens: int = 1,
) -> list[TraceRequest]:
    """Token counts times `factor`, rounded, clamped to [min_tokens, max_prompt/max_output].

    For replaying a production trace against a small model (short context) or a bigger one.
    Prefix block hashes are cut to the blocks the scaled prompt can still hold only by the
    caller, who knows the block size; here they are kept as they are.
    """
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"factor = {factor}, must be a finite number > 0")
    if min_tokens < 1:
        raise ValueError(f"min_tokens = {min_tokens}, must be >= 1")
    for name, bound in (("max_prompt", max_prompt), ("max_output", max_output)):
        if bound < min_tokens:
            raise ValueError(f"{name} = {bound}, must be >= min_tokens ({min_tokens})")

    def clamp(tokens: int, upper: int) -> int:
        return max(min_tokens, min(upper, round(tokens * factor)))

    return [
        dataclasses.replace(
            req,
            prompt_tokens=clamp(req.prompt_tokens, max_prompt),
            output_tokens=clamp(req.output_tokens, max_output),
        )
        for req in reqs
    ]
