"""Rounding that float noise cannot tip over an integer. Pure: no I/O.

Float sums of equal shares can land a hair above an integer (2.1 / 0.7 = 3.0000000000000004);
without a tolerance, ceil would ask for a pod nobody needs and the next tick would take it
back. The decision, the windows and the simulator's HPA and KPA baselines all round pod counts
and bucket indexes, and all round the same way: through here.
"""

from __future__ import annotations

import math

EPSILON = 1e-9
"""The tolerance: absolute where a caller adds it to a comparison, relative in ceil and floor."""


def ceil(value: float) -> int:
    """math.ceil, except a value within EPSILON (relative, at least absolute) of an integer
    rounds to that integer."""
    return math.ceil(value - EPSILON * max(1.0, abs(value)))


def floor(value: float) -> int:
    """math.floor, except a value within EPSILON (relative, at least absolute) below an integer
    rounds to that integer."""
    return math.floor(value + EPSILON * max(1.0, abs(value)))
