"""The chart's files agree with their sources: the CRD in charts/kvscale/crds/ is the one
generated from the models, the README is what scripts/chart-readme.py makes of values.yaml
(every value documented), and the image the chart installs is the one the CRD defaults to."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import types

import pytest
import yaml

from kvscale.api import crd, models

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kvscale"
SCRIPT = ROOT / "scripts" / "chart-readme.py"


def readme_script() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("chart_readme", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up in sys.modules while being defined.
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_charts_crd_is_the_generated_one() -> None:
    charted = (CHART / "crds" / pathlib.Path(crd.YAML_PATH).name).read_text()
    assert charted == crd.render_yaml(), (
        "charts/kvscale/crds/ drifted from the models: run "
        f"`kvscale crd > {crd.YAML_PATH} && cp {crd.YAML_PATH} charts/kvscale/crds/`"
    )


def test_the_readme_is_generated_from_values_yaml() -> None:
    found = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert found.returncode == 0, found.stderr


def test_an_undocumented_value_is_an_error_naming_it() -> None:
    script = readme_script()
    text = (
        "image:\n"
        "  # -- The image.\n"
        "  repository: x\n"
        "  tag: ''\n"
        "# -- A documented map: its keys need no comments of their own.\n"
        "resources:\n"
        "  limits:\n"
        "    memory: 1Gi\n"
        "operator:\n"
        "  replicas: 2\n"
    )
    with pytest.raises(script.UndocumentedError, match=r"image\.tag, operator\.replicas"):
        script.table(text)


def test_comments_above_a_key_document_it_and_continuations_join() -> None:
    script = readme_script()
    text = "group:\n  # -- First line\n  # and the second.\n  key: 3\n\n# -- Top.\ntop: [a]\n"
    assert script.table(text) == (
        "| Key | Default | Description |\n"
        "|---|---|---|\n"
        "| `group.key` | `3` | First line and the second. |\n"
        '| `top` | `["a"]` | Top. |\n'
    )


def test_the_chart_installs_the_image_the_crd_defaults_sidecars_to() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
    assert image == models.DEFAULT_SIDECAR_IMAGE
