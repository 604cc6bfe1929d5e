"""The core layer is pure: its modules import only each other and the standard library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).parents[2] / "airflow_portkey" / "_core"
# Standard-library modules that do I/O or talk to the network have no place in the core either.
FORBIDDEN_STDLIB = {"socket", "ssl", "asyncio", "subprocess", "http", "urllib.request", "select"}


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_only_core_and_standard_library(path: Path) -> None:
    outside = []
    for name in imported_modules(path):
        top = name.split(".")[0]
        if name == "__future__" or name.startswith("airflow_portkey._core"):
            continue
        if (
            top not in sys.stdlib_module_names
            or name in FORBIDDEN_STDLIB
            or top in FORBIDDEN_STDLIB
        ):
            outside.append(name)
    assert outside == [], f"{path.name} imports {outside} (the core must stay pure)"


def test_core_folder_holds_the_modules_this_test_checks() -> None:
    # A moved or renamed folder would otherwise make the test above check nothing.
    assert len(list(CORE.glob("*.py"))) >= 10
