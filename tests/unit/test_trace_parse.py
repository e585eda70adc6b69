"""Traces parse from the Azure CSV schema and JSONL; bad rows get an error naming line and field."""

from __future__ import annotations

import itertools
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvscale import trace, tracefile

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def test_azure_csv_is_sorted_and_relative_to_the_first_request() -> None:
    text = (
        HEADER + "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:16:46.6805900,5,1"  # no newline at the end, like the shared files
    )
    reqs = trace.parse_csv(text)
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(374, 44), (396, 109), (5, 1)]
    assert reqs[0].arrival_s == 0.0
    assert reqs[1].arrival_s == pytest.approx(4.314579)
    assert reqs[2].arrival_s == pytest.approx(60.0)
    assert all(r.prefix_block_hashes == () for r in reqs)


def test_equal_timestamps_keep_the_file_order() -> None:
    text = HEADER + "2023-11-16 18:15:46.0,3,1\n2023-11-16 18:15:46.0,1,1\n"
    assert [r.prompt_tokens for r in trace.parse_csv(text)] == [3, 1]


def test_a_trace_crossing_midnight_stays_in_order() -> None:
    text = HEADER + "2023-11-17 00:00:01.0,2,1\n2023-11-16 23:59:59.5,1,1\n"
    assert [r.arrival_s for r in trace.parse_csv(text)] == [0.0, 1.5]


def test_blank_lines_are_ignored_and_a_header_only_trace_is_empty() -> None:
    assert trace.parse_csv(HEADER) == []
    assert len(trace.parse_csv(HEADER + "\n2023-11-16 18:15:46.0,1,1\n\n")) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("2023-11-16 18:15:46.0,1\n", "line 2: 2 fields, must be 3"),
        ("2023-11-16 18:15:46.0,1,1,1\n", "line 2: 4 fields, must be 3"),
        ("yesterday,1,1\n", "line 2: TIMESTAMP = 'yesterday'"),
        ("2023-11-16 18:15:46.0,abc,1\n", "line 2: ContextTokens = 'abc', must be an integer"),
        ("2023-11-16 18:15:46.0,0,1\n", "line 2: ContextTokens = 0, must be an integer >= 1"),
        ("2023-11-16 18:15:46.0,1,-3\n", "line 2: GeneratedTokens = -3"),
        ("2023-11-16 18:15:46.0,1,1\n2023-11-16 18:15:47.0,1,x\n", "line 3: GeneratedTokens"),
    ],
)
def test_bad_csv_rows_name_the_line_and_field(body: str, message: str) -> None:
    with pytest.raises(trace.TraceError, match=message):
        trace.parse_csv(HEADER + body)


@pytest.mark.parametrize("text", ["", "time,in,out\n", "TIMESTAMP,ContextTokens\n"])
def test_a_csv_without_the_azure_header_is_refused(text: str) -> None:
    with pytest.raises(trace.TraceError, match="line 1: header"):
        trace.parse_csv(text)


def test_jsonl_with_prefix_hashes() -> None:
    text = (
        '{"arrival_s": 10.5, "prompt_tokens": 40, "output_tokens": 2, '
        '"prefix_block_hashes": [7, 8]}\n'
        "\n"
        '{"arrival_s": 10, "prompt_tokens": 3, "output_tokens": 4}\n'
    )
    reqs = trace.parse_jsonl(text)
    assert reqs == [
        trace.TraceRequest(0.0, 3, 4),
        trace.TraceRequest(0.5, 40, 2, (7, 8)),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{", "line 1: not JSON"),
        ("[1, 2]", "line 1: must be a JSON object, got list"),
        ('{"prompt_tokens": 1, "output_tokens": 1}', "line 1: arrival_s is missing"),
        ('{"arrival_s": 0, "output_tokens": 1}', "line 1: prompt_tokens is missing"),
        ('{"arrival_s": "0", "prompt_tokens": 1, "output_tokens": 1}', "arrival_s = '0'"),
        ('{"arrival_s": NaN, "prompt_tokens": 1, "output_tokens": 1}', "arrival_s = nan"),
        ('{"arrival_s": 0, "prompt_tokens": 1.5, "output_tokens": 1}', "prompt_tokens = 1.5"),
        ('{"arrival_s": 0, "prompt_tokens": true, "output_tokens": 1}', "prompt_tokens = True"),
        ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 0}', "output_tokens = 0"),
        (
            '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "prefix_block_hashes": 3}',
            "prefix_block_hashes = 3, must be a list of integers",
        ),
        (
            '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, '
            '"prefix_block_hashes": ["a"]}',
            "prefix_block_hashes has 'a'",
        ),
        ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "x": 1}', "unknown field 'x'"),
    ],
)
def test_bad_jsonl_lines_name_the_line_and_field(line: str, message: str) -> None:
    with pytest.raises(trace.TraceError, match=message):
        trace.parse_jsonl(line + "\n")


requests = st.builds(
    trace.TraceRequest,
    arrival_s=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    prompt_tokens=st.integers(min_value=1, max_value=200_000),
    output_tokens=st.integers(min_value=1, max_value=200_000),
    prefix_block_hashes=st.lists(st.integers(min_value=-(2**63), max_value=2**64)).map(tuple),
)


@given(st.lists(requests, max_size=30))
def test_jsonl_round_trips(reqs: list[trace.TraceRequest]) -> None:
    ordered = sorted(reqs, key=lambda r: r.arrival_s)
    parsed = trace.parse_jsonl(trace.to_jsonl(ordered))
    start = ordered[0].arrival_s if ordered else 0.0
    assert [(r.prompt_tokens, r.output_tokens, r.prefix_block_hashes) for r in parsed] == [
        (r.prompt_tokens, r.output_tokens, r.prefix_block_hashes) for r in ordered
    ]
    assert [r.arrival_s for r in parsed] == [r.arrival_s - start for r in ordered]


REQS = [trace.TraceRequest(float(t), 100, 10) for t in range(10)]


def test_window_cuts_and_rebases_time() -> None:
    cut = trace.window(REQS, 3.0, 4.0)
    assert [r.arrival_s for r in cut] == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="duration_s = 0"):
        trace.window(REQS, 0.0, 0.0)


def test_compress_speeds_up_arrivals() -> None:
    assert [r.arrival_s for r in trace.compress(REQS[:3], 2.0)] == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="time_factor = 0"):
        trace.compress(REQS, 0.0)


@pytest.mark.parametrize(
    ("factor", "prompt", "output", "expected"),
    [
        (0.5, 100, 10, (50, 5)),
        (0.001, 100, 10, (1, 1)),  # never below min_tokens
        (10.0, 100, 10, (64, 32)),  # clamped to the maxima
    ],
)
def test_scale_tokens(factor: float, prompt: int, output: int, expected: tuple[int, int]) -> None:
    scaled = trace.scale_tokens(
        [trace.TraceRequest(1.0, prompt, output, (5,))], factor, max_prompt=64, max_output=32
    )
    assert (scaled[0].prompt_tokens, scaled[0].output_tokens) == expected
    assert (scaled[0].arrival_s, scaled[0].prefix_block_hashes) == (1.0, (5,))


def test_scale_tokens_refuses_bad_bounds() -> None:
    with pytest.raises(ValueError, match="max_output = 0, must be >= min_tokens"):
        trace.scale_tokens(REQS, 1.0, max_prompt=10, max_output=0)


def test_load_reads_by_extension_and_names_the_file(tmp_path: pathlib.Path) -> None:
    good = tmp_path / "t.jsonl"
    good.write_text('{"arrival_s": 1, "prompt_tokens": 2, "output_tokens": 3}\n')
    assert tracefile.load(good) == [trace.TraceRequest(0.0, 2, 3)]
    bad = tmp_path / "t.csv"
    bad.write_text(HEADER + "2023-11-16 18:15:46.0,1\n")
    with pytest.raises(trace.TraceError, match=r"t\.csv: line 2: 2 fields"):
        tracefile.load(bad)
    with pytest.raises(trace.TraceError, match=r"unknown trace format '\.txt'"):
        tracefile.load(tmp_path / "t.txt")
    with pytest.raises(trace.TraceError, match="cannot read"):
        tracefile.load(tmp_path / "missing.csv")


def test_a_shipped_trace_missing_from_the_install_is_named(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracefile, "BUNDLED_DIR", tmp_path / "nowhere")
    with pytest.raises(trace.TraceError, match=r"nowhere/azure_llm_2023_conv\.csv"):
        tracefile.resolve("conv")


def test_any_other_name_is_a_path() -> None:
    assert tracefile.resolve("my/trace.jsonl") == pathlib.Path("my/trace.jsonl")


def test_the_shipped_azure_traces_parse() -> None:
    conv = tracefile.load(tracefile.resolve("conv"))
    code = tracefile.load(tracefile.resolve("code"))
    assert (len(conv), len(code)) == (19_366, 8_819)
    assert conv[0].arrival_s == 0.0
    assert 3_500 < conv[-1].arrival_s < 3_700
    assert all(a.arrival_s <= b.arrival_s for a, b in itertools.pairwise(conv))


def test_amplify_copies_every_request_spread_over_the_window() -> None:
    reqs = [trace.TraceRequest(0.0, 1, 1), trace.TraceRequest(100.0, 2, 2)]
    out = trace.amplify(reqs, 3, spread_s=60.0)
    assert [(r.arrival_s, r.prompt_tokens) for r in out] == [
        (0.0, 1),
        (20.0, 1),
        (40.0, 1),
        (100.0, 2),
        (120.0, 2),
        (140.0, 2),
    ]
    assert trace.amplify(reqs, 1) == reqs
    with pytest.raises(ValueError, match="copies = 0"):
        trace.amplify(reqs, 0)


def test_steady_spaces_the_mix_evenly() -> None:
    out = trace.steady(REQS[:3], 4.0)
    assert [r.arrival_s for r in out] == [0.0, 0.25, 0.5]
    with pytest.raises(ValueError, match="rate_per_s = 0"):
        trace.steady(REQS, 0.0)
