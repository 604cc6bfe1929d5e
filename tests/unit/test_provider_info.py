"""What Airflow reads about the provider, and what importing the hook costs a DAG file."""

from __future__ import annotations

import importlib
import subprocess
from importlib.metadata import entry_points
from typing import Any

import pytest

from airflow_portkey.get_provider_info import get_provider_info
from airflow_portkey.hooks.portkey import PortkeyHook

from .support import IMPORT_PROBE


@pytest.fixture(scope="module")
def connection_type() -> dict[str, Any]:
    types: list[dict[str, Any]] = get_provider_info()["connection-types"]
    (conn,) = [c for c in types if c["connection-type"] == "portkey"]
    return conn


def test_connection_type_names_the_hook(connection_type: dict[str, Any]) -> None:
    assert connection_type["hook-class-name"] == "airflow_portkey.hooks.portkey.PortkeyHook"
    assert connection_type["hook-name"] == "Portkey"
    assert PortkeyHook.conn_type == "portkey"
    assert PortkeyHook.default_conn_name == "portkey_default"
    assert PortkeyHook.conn_name_attr == "portkey_conn_id"


CREDENTIAL_FIELDS = ["secret_virtual_key", "secret_config", "provider_api_key", "secret_headers"]


@pytest.mark.parametrize("field", CREDENTIAL_FIELDS)
def test_secret_fields_are_passwords(connection_type: dict[str, Any], field: str) -> None:
    assert connection_type["conn-fields"][field]["schema"]["format"] == "password"


def test_credential_fields_are_the_hooks_secret_fields(connection_type: dict[str, Any]) -> None:
    passwords = {
        name
        for name, spec in connection_type["conn-fields"].items()
        if spec["schema"].get("format") == "password"
    }
    assert passwords == set(CREDENTIAL_FIELDS) == set(PortkeyHook.secret_fields)


@pytest.mark.parametrize(
    "field", ["provider", "custom_host", "openai_organization", "openai_project", "metadata"]
)
def test_other_text_fields_are_not_passwords(connection_type: dict[str, Any], field: str) -> None:
    assert "format" not in connection_type["conn-fields"][field]["schema"]


def test_ui_relabels_host_and_password(connection_type: dict[str, Any]) -> None:
    behaviour = connection_type["ui-field-behaviour"]
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "Portkey API key"}
    assert "password" not in behaviour["hidden-fields"]
    assert "host" not in behaviour["hidden-fields"]


def test_every_declared_extra_is_read_by_the_hook(connection_type: dict[str, Any]) -> None:
    from airflow_portkey._core.settings import KNOWN_EXTRAS

    assert set(connection_type["conn-fields"]) <= KNOWN_EXTRAS


def test_every_listed_module_and_class_imports() -> None:
    info = get_provider_info()
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for dotted in [*info["notifications"], info["connection-types"][0]["hook-class-name"]]:
        module, _, name = dotted.rpartition(".")
        assert getattr(importlib.import_module(module), name)


def test_entry_point_is_registered() -> None:
    (entry,) = [
        e
        for e in entry_points(group="apache_airflow_provider")
        if e.value.startswith("airflow_portkey")
    ]
    assert entry.load() is get_provider_info


def test_airflow_knows_the_connection_type() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook_info = ProvidersManagerTaskRuntime().hooks["portkey"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_portkey.hooks.portkey.PortkeyHook"
    assert hook_info.connection_testable is True
    widgets = ProvidersManager().connection_form_widgets
    assert "extra__portkey__provider_api_key" in widgets


def test_importing_the_hook_does_not_import_requests(
    import_probe: subprocess.Popen[str],
) -> None:
    """A DAG file that imports the hook does not pay for requests at parse time."""
    assert IMPORT_PROBE in str(import_probe.args)
    stdout, stderr = import_probe.communicate(timeout=180)
    assert import_probe.returncode == 0, stderr
    assert stdout.strip().splitlines()[-1] == "False"
