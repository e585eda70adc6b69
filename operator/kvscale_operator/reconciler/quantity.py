"""Kubernetes resource quantities ("8Gi", "500m", "1e9") as numbers. Pure.

Only what the operator needs to compare sizes: the value in base units as a float. The API
server has already checked the syntax against its own pattern; anything that still does not
parse comes back as None so callers can say which field is wrong.
"""

from __future__ import annotations

import re

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}
_FORM = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|([a-zA-Z]*))$")

GIB = float(2**30)


def parse(text: str) -> float | None:
    """The quantity in base units (bytes, cores), or None when `text` is not a quantity."""
    match = _FORM.match(text.strip())
    if match is None:
        return None
    number, exponent, suffix = match.groups()
    if exponent is not None:
        return float(number + exponent)
    if suffix in _BINARY:
        return float(number) * _BINARY[suffix]
    if suffix in _DECIMAL:
        return float(number) * _DECIMAL[suffix]
    return None
