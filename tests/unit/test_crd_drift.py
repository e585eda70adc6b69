"""The checked-in CRD and field reference are exactly what the models generate."""

from __future__ import annotations

import difflib
import pathlib

import pytest
import yaml

from kvscale.api import crd

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _diff(checked_in: str, generated: str, name: str) -> str:
    lines = difflib.unified_diff(
        checked_in.splitlines(keepends=True),
        generated.splitlines(keepends=True),
        fromfile=f"{name} (checked in)",
        tofile=f"{name} (generated)",
        n=2,
    )
    return "".join(list(lines)[:60])


@pytest.mark.parametrize(
    ("path", "render", "command"),
    [
        (crd.YAML_PATH, crd.render_yaml, f"kvscale crd > {crd.YAML_PATH}"),
        (
            crd.REFERENCE_PATH,
            crd.render_reference,
            f"kvscale crd --reference > {crd.REFERENCE_PATH}",
        ),
    ],
    ids=["crd-yaml", "reference-markdown"],
)
def test_checked_in_file_matches_the_models(path: str, render: object, command: str) -> None:
    assert callable(render)
    generated: str = render()
    checked_in_path = ROOT / path
    assert checked_in_path.is_file(), f"{path} is missing: run `{command}`"
    checked_in = checked_in_path.read_text()
    assert checked_in == generated, (
        f"{path} differs from the models in src/kvscale/api/models.py; "
        f"run `{command}` and commit the result.\n{_diff(checked_in, generated, path)}"
    )


def test_checked_in_yaml_parses_to_the_built_crd() -> None:
    # The YAML text is not just equal by accident of formatting: it loads as the same object.
    assert yaml.safe_load((ROOT / crd.YAML_PATH).read_text()) == crd.build_crd()
