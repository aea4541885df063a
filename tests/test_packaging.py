"""The package as installed: every Python package and data file of srfp is declared in pyproject.toml."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "srfp").rglob("__init__.py")}
    assert found | {"srfp.grids"} == declared
