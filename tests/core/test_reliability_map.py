"""docs/reliability.md maps each rule to the tests that prove it, docs/spend-safety.md each way a
run can end badly: every test they name exists, so a test renamed or removed cannot silently
leave a rule unproven on paper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"
DOCS = (DOC, REPO / "docs" / "spend-safety.md")
# "unit/test_x.py::test_a, ::test_b": a name without a file belongs to the last file named.
REFERENCE = re.compile(
    r"(?P<file>(?:core|unit|airflow|gateway|ui|deployment|transport|packaging)/test_\w+\.py)|::(?P<test>test_\w+)"
)


def named_tests(doc: Path = DOC) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    current = ""
    for match in REFERENCE.finditer(doc.read_text()):
        if match["file"]:
            current = match["file"]
            found.append((current, None))
        else:
            assert current, f"::{match['test']} names no file before it"
            found.append((current, match["test"]))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_test_the_reliability_map_names_exists(doc: Path) -> None:
    missing = []
    for file, test in named_tests(doc):
        path = REPO / "tests" / file
        if not path.is_file():
            missing.append(file)
        elif test and not re.search(rf"^(async )?def {test}\(", path.read_text(), re.MULTILINE):
            missing.append(f"{file}::{test}")
    assert missing == [], f"docs/{doc.name} names tests that do not exist: {missing}"


def test_the_map_names_tests_of_every_tier() -> None:
    tiers = {file.split("/")[0] for file, _ in named_tests()}
    assert {"core", "unit", "airflow", "gateway", "deployment"} <= tiers
