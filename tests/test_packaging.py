"""The package as installed: every Python package of srfp is declared in pyproject.toml."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    listed = re.search(r"^packages = (\[.*\])$", (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "srfp").rglob("__init__.py")}
    assert found | {"srfp.grids"} == set(ast.literal_eval(listed))
