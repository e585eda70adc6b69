"""The optional extras of the kvscale package, and the error a user sees without one. Pure.

`pip install kvscale` carries what the operator, the sidecar and the engine twin need; the
local stack, the demo and plots need extras (pyproject.toml's optional-dependencies). A command
that needs one says which, instead of failing on an import deep inside.
"""

from __future__ import annotations

# The third-party packages each extra brings.
PACKAGES = {
    "plot": frozenset({"matplotlib"}),
    "localstack": frozenset({"cryptography"}),
    "demo": frozenset({"matplotlib", "cryptography"}),
}


def missing(extra: str, error: ModuleNotFoundError) -> str:
    """The message for a command that needs `extra` and met `error`. Any other missing module
    is a broken install, not a missing extra: `error` is raised as it is."""
    if (error.name or "").partition(".")[0] not in PACKAGES[extra]:
        raise error
    return (
        f"this needs the '{extra}' extra ({error.name} is not installed): "
        f"pip install 'kvscale[{extra}]'"
    )
