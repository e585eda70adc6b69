"""No first-party module may carry a standard-library name.

The top-level folder `operator/` is the reason this test exists: were it an importable package,
`import operator` anywhere (kopf, pydantic and the standard library itself do it) would load
our code instead. What can shadow is what sits directly in a directory on `sys.path`: the
editable install puts each source root there (pyproject's `dev-mode-dirs`, read here so a new
root is covered without touching this test). Modules inside our packages are only ever
imported by their full dotted name (`kvscale.trace`), so they cannot shadow anything.
"""

from __future__ import annotations

import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _source_roots() -> list[pathlib.Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [ROOT / root for root in config["tool"]["hatch"]["build"]["dev-mode-dirs"]]


def _top_level_names(root: pathlib.Path) -> set[str]:
    """What `import NAME` can find in a source root: its modules and packages."""
    names = {path.stem for path in root.glob("*.py")}
    names |= {path.parent.name for path in root.glob("*/__init__.py")}
    return names


def test_source_roots_hold_no_module_with_a_standard_library_name() -> None:
    roots = _source_roots()
    assert {root.name for root in roots} >= {"src", "operator", "engine_sidecar"}
    clashes = {
        f"{root.name}/{name}"
        for root in roots
        for name in _top_level_names(root)
        if name in sys.stdlib_module_names
    }
    assert not clashes, f"first-party modules shadow the standard library: {sorted(clashes)}"


def test_the_operator_folder_is_not_a_package_and_holds_one_with_another_name() -> None:
    operator_dir = ROOT / "operator"
    assert not (operator_dir / "__init__.py").exists()
    packages = [p.parent.name for p in operator_dir.glob("*/__init__.py")]
    assert packages == ["kvscale_operator"]


def test_import_operator_still_gives_the_standard_library() -> None:
    import operator

    assert operator.__file__ is not None
    assert pathlib.Path(operator.__file__).parent != ROOT / "operator"
    assert operator.add(2, 3) == 5
