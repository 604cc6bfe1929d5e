"""The core layer is pure: its modules import only each other and the standard library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).parents[2] / "airflow_portkey" / "_core"
# Standard-library modules that do I/O or talk to the network have no place in the core either.
FORBIDDEN_STDLIB = {"socket", "ssl", "asyncio", "subprocess", "http", "urllib.request", "select"}
# Third-party modules the core may use, each for pure computation only:
# - pendulum: Airflow's own date library (installed with Airflow, already loaded by any DAG
#   file), for the batch's timestamps as aware UTC datetimes and durations in words. The core
#   uses it in UTC only, never reads the clock or the time-zone database through it (checked
#   below), so it stays free of I/O and deterministic under a fake clock.
ALLOWED_THIRD_PARTY = {"pendulum"}
# pendulum calls that read the clock, the system's time zone or the time-zone files.
IMPURE_PENDULUM_CALLS = {
    "now",
    "today",
    "tomorrow",
    "yesterday",
    "local",
    "local_timezone",
    "timezone",
    "set_local_timezone",
}


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
        if top in ALLOWED_THIRD_PARTY:
            continue
        if (
            top not in sys.stdlib_module_names
            or name in FORBIDDEN_STDLIB
            or top in FORBIDDEN_STDLIB
        ):
            outside.append(name)
    assert outside == [], f"{path.name} imports {outside} (the core must stay pure)"


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_uses_pendulum_without_clock_or_time_zone_files(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    impure = [
        f"line {node.lineno}: pendulum.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "pendulum"
        and node.attr in IMPURE_PENDULUM_CALLS
    ]
    from_imports = [
        f"line {node.lineno}: from pendulum import {alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "pendulum"
        for alias in node.names
        if alias.name in IMPURE_PENDULUM_CALLS
    ]
    assert impure + from_imports == [], f"{path.name} uses impure pendulum calls"


def test_core_folder_holds_the_modules_this_test_checks() -> None:
    # A moved or renamed folder would otherwise make the test above check nothing.
    assert len(list(CORE.glob("*.py"))) >= 10
