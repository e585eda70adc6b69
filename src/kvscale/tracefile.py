"""Trace files: the traces kvscale ships by name, and reading a trace file. Does file I/O.

The Azure traces (`conv`, `code`, CC-BY 4.0) and the Mooncake FAST'25 synthetic trace
(`mooncake`, Apache-2.0) ship inside the package (`kvscale/data/traces/`, with their licenses
and attribution), so `pip install kvscale` and a bare clone can replay them with nothing beside
the checkout. Parsing stays in the pure `kvscale.trace`.
"""

from __future__ import annotations

import pathlib

from kvscale import trace

# The folder of the traces shipped with the package (package data, see README.md there).
BUNDLED_DIR = pathlib.Path(__file__).resolve().parent / "data" / "traces"
NAMED_TRACES = {
    "conv": "azure_llm_2023_conv.csv",
    "code": "azure_llm_2023_code.csv",
    "mooncake": "mooncake_fast25_synthetic.jsonl",
}


def resolve(name_or_path: str) -> pathlib.Path:
    """A shipped trace's name (`conv`, `code`, `mooncake`) as its path, else the text as a path."""
    if name_or_path in NAMED_TRACES:
        path = BUNDLED_DIR / NAMED_TRACES[name_or_path]
        if not path.is_file():
            raise trace.TraceError(
                f"the trace {name_or_path!r} should ship with kvscale at {path}, but the file is "
                "missing: reinstall the package"
            )
        return path
    return pathlib.Path(name_or_path)


def load(path: pathlib.Path) -> list[trace.TraceRequest]:
    """Read a trace file: `.csv` (Azure schema) or `.jsonl`/`.json` (JSON lines)."""
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".jsonl", ".json"}:
        raise trace.TraceError(f"{path}: unknown trace format {suffix!r}, must be .csv or .jsonl")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise trace.TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise trace.TraceError(f"{path}: not UTF-8 text") from None
    try:
        return trace.parse_csv(text) if suffix == ".csv" else trace.parse_jsonl(text)
    except trace.TraceError as exc:
        raise trace.TraceError(f"{path}: {exc}") from None
