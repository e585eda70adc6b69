"""The operator's wall clock: now in UTC, for timestamps written to the API server. Reads it.

Decisions take time as an argument; the shells that need the wall clock (the autoscale loop,
leader election, the kopf handlers) read it here, and take it as a parameter (`wall=`, `now=`)
so a test can pass its own.
"""

from __future__ import annotations

import datetime


def now() -> datetime.datetime:
    """Now, timezone-aware in UTC (Kubernetes timestamps are written in UTC)."""
    return datetime.datetime.now(datetime.UTC)
