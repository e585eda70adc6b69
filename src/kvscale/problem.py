"""Pydantic validation errors as one line that names each offending field. Pure: no I/O.

The operator (a bad InferenceDeployment) and the report reader (a bad sidecar report) both
answer a `pydantic.ValidationError` with the same kind of line, ``spec.engine.blockSize: Input
should be a multiple of 16; ...``, so a user reads the field to fix in their own document's
terms: the wire's (camelCase) path, dot-separated, with list indexes as numbers.
"""

from __future__ import annotations

import pydantic


def describe(error: pydantic.ValidationError, *, whole: str) -> str:
    """Each problem as "path: what is wrong", joined by "; "; `whole` names the document itself
    for a problem with no path (a rule across its top-level fields)."""
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or whole
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)
