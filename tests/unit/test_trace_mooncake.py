"""The Mooncake FAST'25 trace format: fields, hash-id expansion, errors naming the field.

The files are generated here in that format; of the published traces, only the synthetic one
ships with kvscale (`--trace mooncake`), checked against its README's figures."""

from __future__ import annotations

import json
import pathlib

import pytest

from kvscale import trace, tracefile


def line(timestamp: float, input_length: int, output_length: int, hash_ids: list[int]) -> str:
    return json.dumps(
        {
            "timestamp": timestamp,
            "input_length": input_length,
            "output_length": output_length,
            "hash_ids": hash_ids,
        }
    )


TEXT = "\n".join(
    [
        line(0, 1100, 6, [0, 1, 2]),  # 1100 tokens: two full 512 blocks and a partial one
        line(40, 28, 445, [3]),
        line(277, 1090, 92, [0, 1, 4]),  # shares the first 1024 tokens with the first
    ]
)


def test_mooncake_lines_become_requests_with_times_in_seconds() -> None:
    reqs = trace.parse_jsonl(TEXT)  # recognised by its fields
    assert [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in reqs] == [
        (0.0, 1100, 6),
        (0.04, 28, 445),
        (0.277, 1090, 92),
    ]


def test_hash_ids_expand_to_the_twins_blocks() -> None:
    first, short, third = trace.parse_mooncake(TEXT, block_size=16)
    # 1100 // 16 = 68 full blocks: 32 from id 0, 32 from id 1, 4 from id 2.
    assert len(first.prefix_block_hashes) == 68
    assert first.prefix_block_hashes[:3] == (0, 1, 2)
    assert first.prefix_block_hashes[32] == 32  # id 1, position 0
    assert first.prefix_block_hashes[64:] == (64, 65, 66, 67)  # id 2, positions 0-3
    # Shared prefix: the first 64 blocks (ids 0 and 1) are equal, then they differ.
    assert third.prefix_block_hashes[:64] == first.prefix_block_hashes[:64]
    assert third.prefix_block_hashes[64] != first.prefix_block_hashes[64]
    assert short.prefix_block_hashes == (96,)  # 28 tokens: one full 16-token block of id 3
    assert trace.expand_hash_ids([5], 600, block_size=512) == (5,)


def test_a_mooncake_file_loads_by_extension(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "synthetic.jsonl"
    path.write_text(TEXT + "\n")
    assert len(tracefile.load(path)) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"timestamp": 0, "input_length": 5, "hash_ids": [0]}', "output_length is missing"),
        (line(0, 0, 5, []), "input_length = 0"),
        (line(0, 100, 5, [0, 1]), "hash_ids has 2 ids, must be at most 1"),
        (line(0, 100, 5, [-1]), "hash_ids = \\[-1\\]"),
        (
            '{"timestamp": "x", "input_length": 5, "output_length": 1, "hash_ids": []}',
            "timestamp = 'x'",
        ),
        (
            '{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [], "a": 1}',
            "unknown field 'a'",
        ),
    ],
)
def test_bad_mooncake_lines_name_the_line_and_field(text: str, message: str) -> None:
    with pytest.raises(trace.TraceError, match=f"line 1: .*{message}"):
        trace.parse_mooncake(text)


def test_a_block_size_that_does_not_divide_512_is_refused() -> None:
    with pytest.raises(ValueError, match="block_size = 48"):
        trace.expand_hash_ids([0], 100, block_size=48)


def test_the_shipped_synthetic_trace_is_the_published_one() -> None:
    """`--trace mooncake`: the FAST'25 synthetic trace as its README describes it (3,993
    requests over about 17 minutes, mean prompt 15,325 tokens, about half over 8k tokens)."""
    path = tracefile.resolve("mooncake")
    assert path.parent == tracefile.BUNDLED_DIR
    reqs = tracefile.load(path)
    assert len(reqs) == 3993
    assert 16 * 60 < reqs[-1].arrival_s < 18 * 60
    assert round(sum(r.prompt_tokens for r in reqs) / len(reqs)) == 15325
    long = sum(r.prompt_tokens > 8192 for r in reqs) / len(reqs)
    assert 0.45 < long < 0.6
    # Prefixes are shared: some requests' first block hashes repeat an earlier request's.
    firsts = [r.prefix_block_hashes[0] for r in reqs if r.prefix_block_hashes]
    assert len(set(firsts)) < len(firsts)
