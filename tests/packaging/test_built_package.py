"""The package as a user installs it: built (sdist, then the wheel from the sdist), installed
into a fresh virtual environment with Airflow, and seen by Airflow's own CLI.

One build and one install for the module (about a minute with uv's cache warm): the
environment's packages are pinned to this checkout's `.venv`, so uv links them from its cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

import airflow_portkey

REPO = Path(__file__).parents[2]
URL = "https://github.com/airflow-portkey/airflow-portkey"
pytestmark = pytest.mark.packaging


@dataclass
class Built:
    wheel: Path
    sdist: Path
    venv: Path


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.fail("uv is not installed: `make install` puts it in .venv/bin")
    return found


def _run(*cmd: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kwargs
    )
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    work = tmp_path_factory.mktemp("package")
    uv = _uv()
    # A copy of the files git knows (not ignored ones): the build must not depend on caches,
    # virtual environments or node_modules lying around.
    listed = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO)
    files = listed.stdout.split("\0")
    source = work / "source"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _run(uv, "build", "--quiet", "--out-dir", work / "dist", source)
    (wheel,) = (work / "dist").glob("*.whl")
    (sdist,) = (work / "dist").glob("*.tar.gz")
    # The same versions as this checkout's environment, so uv installs from its cache.
    pins = _run(uv, "pip", "freeze", "--python", sys.executable).stdout.splitlines()
    constraints = work / "constraints.txt"
    constraints.write_text(
        "\n".join(p for p in pins if "==" in p and not p.startswith("airflow-portkey")) + "\n"
    )
    venv = work / "venv"
    _run(uv, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _run(uv, "pip", "install", "--quiet", "--python", python, "-c", constraints, wheel)
    yield Built(wheel, sdist, venv)


def _wheel_names(built: Built) -> set[str]:
    with zipfile.ZipFile(built.wheel) as archive:
        return set(archive.namelist())


def _metadata(built: Built) -> Message:
    with zipfile.ZipFile(built.wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def test_wheel_holds_the_license_notice_and_type_marker(built: Built) -> None:
    names = _wheel_names(built)
    dist_info = f"airflow_portkey-{airflow_portkey.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    assert f"{dist_info}/licenses/NOTICE" in names
    assert "airflow_portkey/py.typed" in names
    assert "airflow_portkey/testing/pytest_plugin.py" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "demo/"))]


def test_sdist_holds_what_a_rebuild_and_a_reader_need(built: Built) -> None:
    root = f"airflow_portkey-{airflow_portkey.__version__}"
    with tarfile.open(built.sdist) as archive:
        names = set(archive.getnames())
    for name in ("LICENSE", "NOTICE", "README.md", "CHANGELOG.md", "pyproject.toml"):
        assert f"{root}/{name}" in names
    assert f"{root}/airflow_portkey/py.typed" in names
    assert f"{root}/docs/testing.md" in names


def test_metadata_names_links_python_versions_and_no_dev_tools(built: Built) -> None:
    meta = _metadata(built)
    urls = dict(entry.split(", ", 1) for entry in meta.get_all("Project-URL"))
    assert urls == {
        "Documentation": f"{URL}#readme",
        "Source": URL,
        "Changelog": f"{URL}/blob/main/CHANGELOG.md",
        "Issues": f"{URL}/issues",
    }
    classifiers = set(meta.get_all("Classifier"))
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert meta["License-Expression"] == "Apache-2.0"
    requires = " ".join(meta.get_all("Requires-Dist"))
    for tool in ("pytest", "ruff", "mypy"):
        assert tool not in requires, f"{tool} is a development tool, not a dependency"
    assert "test" not in (meta.get_all("Provides-Extra") or [])


def test_readme_names_every_dependency_the_package_pulls_in(built: Built) -> None:
    """The README's install section says what `pip install` brings; it must not drift."""
    readme = (REPO / "README.md").read_text()
    install = readme[readme.index("## Install") : readme.index("**Requirements**")]
    named = set(re.findall(r"`([A-Za-z0-9_.-]+)(?:[<>=!~][^`]*)?`", install))
    required = {
        re.split(r"[\s<>=!~;\[(]", entry, maxsplit=1)[0]
        for entry in _metadata(built).get_all("Requires-Dist")
        if "extra ==" not in entry
    }
    assert required - named == set(), "dependencies the README's install section omits"


def test_airflow_in_a_fresh_environment_shows_the_provider_and_its_documentation(
    built: Built, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    env["PATH"] = f"{built.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    shown = _run(
        built.venv / "bin" / "airflow",
        "providers",
        "get",
        "airflow-portkey",
        "--full",
        "--output",
        "json",
        env=env,
        cwd=tmp_path,
    )
    (info,) = json.loads(shown.stdout[shown.stdout.index("[") :])
    assert info["package-name"] == "airflow-portkey"
    assert info["documentation-url"] == f"{URL}#readme"
    assert info["versions"] == [airflow_portkey.__version__]
    # The installed package is the wheel, not this checkout.
    where = _run(
        built.venv / "bin" / "python",
        "-c",
        "import airflow_portkey; print(airflow_portkey.__file__)",
        env=env,
        cwd=tmp_path,
    )
    assert str(built.venv) in where.stdout
