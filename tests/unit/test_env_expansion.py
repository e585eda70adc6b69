"""`$(VAR)` expansion in command, args and env follows Kubernetes' rules."""

from __future__ import annotations

import pytest

from kvscale.localstack.nodeagent import expansion

VARIABLES = {"POD_IP": "127.1.0.7", "PORT": "8000", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--host $(POD_IP)", "--host 127.1.0.7"),
        ("http://$(POD_IP):$(PORT)/v1", "http://127.1.0.7:8000/v1"),
        ("$(POD_IP)$(PORT)", "127.1.0.78000"),
        ("[$(EMPTY)]", "[]"),
        # Undefined references stay as written.
        ("$(UNDEFINED)", "$(UNDEFINED)"),
        ("a $(UNDEFINED) b $(PORT)", "a $(UNDEFINED) b 8000"),
        # `$$` escapes a `$`.
        ("$$(POD_IP)", "$(POD_IP)"),
        ("$$$(PORT)", "$8000"),
        ("cost: $$5", "cost: $5"),
        # A `$` not followed by `(` or `$` stays, with what follows.
        ("$PORT", "$PORT"),
        ("100$", "100$"),
        ("$", "$"),
        # An unclosed reference is literal.
        ("$(POD_IP", "$(POD_IP"),
        ("$(POD_IP $(PORT)", "$(POD_IP $(PORT)"),
        ("no variables", "no variables"),
        ("", ""),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expansion.expand(text, VARIABLES) == expected


def test_expand_all_expands_each_argument_separately() -> None:
    assert expansion.expand_all(["--port", "$(PORT)", "$$(PORT)"], VARIABLES) == [
        "--port",
        "8000",
        "$(PORT)",
    ]


def test_env_values_see_only_earlier_variables() -> None:
    resolved = expansion.expand_in_order(
        [("A", "a"), ("B", "$(A)-b"), ("C", "$(D)"), ("D", "d"), ("A", "$(A)$(A)")]
    )
    assert resolved == {"A": "aa", "B": "a-b", "C": "$(D)", "D": "d"}


def test_env_values_see_the_base_variables() -> None:
    resolved = expansion.expand_in_order([("URL", "http://$(POD_IP)")], base={"POD_IP": "x"})
    assert resolved == {"POD_IP": "x", "URL": "http://x"}
