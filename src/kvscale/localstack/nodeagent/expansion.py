"""Kubernetes `$(VAR)` expansion in command, args and env values. Pure.

The rules are Kubernetes' (its `third_party/forked/golang/expansion`): `$(NAME)` is replaced by
the variable's value when it is defined and left as written when it is not; `$$` is an escaped
`$` (so `$$(NAME)` yields the literal `$(NAME)`); a `$` followed by anything else, an unclosed
`$(`, or a trailing `$` stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

_OPERATOR = "$"
_OPENER = "("
_CLOSER = ")"


def expand(text: str, variables: Mapping[str, str]) -> str:
    """`text` with every `$(NAME)` that names a defined variable replaced by its value."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == _OPERATOR and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == _OPERATOR:
                out.append(_OPERATOR)
                advance = 1
            elif rest[0] == _OPENER:
                closer = rest.find(_CLOSER, 1)
                if closer == -1:
                    # An unclosed reference is literal text; scanning resumes after the "(".
                    out.append(_OPERATOR + _OPENER)
                    advance = 1
                else:
                    name = rest[1:closer]
                    out.append(variables.get(name, f"$({name})"))
                    advance = closer + 1
            else:
                out.append(_OPERATOR + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def expand_all(texts: Sequence[str], variables: Mapping[str, str]) -> list[str]:
    """Each of `texts` expanded against the same variables (a container's command or args)."""
    return [expand(text, variables) for text in texts]


def expand_in_order(
    pairs: Sequence[tuple[str, str]], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Env values expanded the way kubelet does: each may refer to `base` and to variables
    defined before it in the list (never after); a later definition of a name wins."""
    resolved: dict[str, str] = dict(base or {})
    for name, value in pairs:
        resolved[name] = expand(value, resolved)
    return resolved
