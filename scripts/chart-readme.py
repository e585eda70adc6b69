#!/usr/bin/env python3
"""Generate charts/kvscale/README.md from README.md.tmpl and the `# --` comments of values.yaml.

A `# --` comment (continued by the `#` lines right below it) documents the key that follows
it; a documented key whose value is a map is one row (its whole map is the default). A key
without a comment must be a map whose keys are documented. Any value left undocumented is an
error, so the table always covers every value.

Usage: scripts/chart-readme.py          write the README
       scripts/chart-readme.py --check  exit 1 when the README is not what would be written
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
import sys
from typing import Any

import yaml

CHART = pathlib.Path(__file__).resolve().parents[1] / "charts" / "kvscale"
PLACEHOLDER = "{{ values_table }}"
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(\s|$)")
_DOC = re.compile(r"^(\s*)# -- ?(.*)$")
_MORE = re.compile(r"^(\s*)# ?(.*)$")


@dataclasses.dataclass(frozen=True)
class Row:
    path: tuple[str, ...]
    doc: str


class UndocumentedError(ValueError):
    """Values without a `# --` comment on them or on a map above them."""


def documented(text: str) -> list[Row]:
    """The documented keys of a values file, in file order."""
    rows: list[Row] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    leaf_depth: int | None = None  # inside a documented map: its keys are part of its value
    for line in text.splitlines():
        if not line.strip():
            pending = None
            continue
        doc = _DOC.match(line)
        if doc:
            pending = [doc.group(2)]
            continue
        more = _MORE.match(line)
        if more:
            if pending is not None:
                pending.append(more.group(2))
            continue
        key = _KEY.match(line)
        if not key:
            continue  # a list item or a continued value
        indent = len(key.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if leaf_depth is not None and indent > leaf_depth:
            pending = None
            continue
        leaf_depth = None
        stack.append((indent, key.group(2)))
        if pending is not None:
            rows.append(Row(tuple(name for _, name in stack), " ".join(pending).strip()))
            leaf_depth = indent
        pending = None
    return rows


def leaves(values: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        return [leaf for key, item in values.items() for leaf in leaves(item, (*path, key))]
    return [path]


def lookup(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = documented(values_text)
    covered = {row.path for row in rows}
    missing = [
        ".".join(leaf)
        for leaf in leaves(values)
        if not any(leaf[: len(path)] == path for path in covered)
    ]
    if missing:
        raise UndocumentedError(f"values without a `# --` comment: {', '.join(missing)}")
    lines = ["| Key | Default | Description |", "|---|---|---|"]
    for row in rows:
        default = json.dumps(lookup(values, row.path), sort_keys=False)
        doc = row.doc.replace("|", "\\|")
        lines.append(f"| `{'.'.join(row.path)}` | `{default}` | {doc} |")
    return "\n".join(lines) + "\n"


def render(chart: pathlib.Path = CHART) -> str:
    template = (chart / "README.md.tmpl").read_text()
    if PLACEHOLDER not in template:
        raise ValueError(f"{chart / 'README.md.tmpl'} has no {PLACEHOLDER}")
    values_text = (chart / "values.yaml").read_text()
    return template.replace(PLACEHOLDER, table(values_text).rstrip("\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the README drifted")
    args = parser.parse_args(argv)
    try:
        wanted = render()
    except (UndocumentedError, ValueError) as error:
        print(f"chart-readme: {error}", file=sys.stderr)
        return 1
    readme = CHART / "README.md"
    if args.check:
        if not readme.exists() or readme.read_text() != wanted:
            print(
                f"chart-readme: {readme} is out of date: run scripts/chart-readme.py",
                file=sys.stderr,
            )
            return 1
        return 0
    readme.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
