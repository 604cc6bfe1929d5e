"""The README is the package index page too: its links are absolute, and those into this
repository name files that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).parents[2]
URL = "https://github.com/airflow-portkey/airflow-portkey"
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def readme_links() -> list[str]:
    return LINK.findall((REPO / "README.md").read_text())


def test_readme_links_are_absolute() -> None:
    relative = [t for t in readme_links() if not t.startswith(("https://", "http://", "#"))]
    assert relative == [], "relative links break on the package index page"


def test_readme_links_into_the_repository_name_files_that_exist() -> None:
    ours = [t for t in readme_links() if t.startswith(URL + "/")]
    assert len(ours) >= 5, "the README links the docs"
    missing = []
    for target in ours:
        match = re.fullmatch(rf"{re.escape(URL)}/(?:blob|tree)/main/(?P<path>[^#]+)(#.*)?", target)
        if match is None:
            if target.rstrip("/") not in (f"{URL}/issues",):
                missing.append(target)
        elif not (REPO / match["path"]).exists():
            missing.append(target)
    assert missing == []
