"""The connection form (provider info's conn-fields) agrees with what the hook accepts, and
every credential sits under a name that Airflow's own masker redacts."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from airflow_portkey._core.errors import PortkeyConfigError
from airflow_portkey._core.settings import SECRET_EXTRAS, settings_from_connection
from airflow_portkey.get_provider_info import get_provider_info
from airflow_portkey.hooks.portkey import PortkeyHook

FIELDS: dict[str, Any] = get_provider_info()["connection-types"][0]["conn-fields"]
NUMBER_FIELDS = [name for name, spec in FIELDS.items() if "number" in str(spec["schema"]["type"])]
INTEGER_FIELDS = [name for name, spec in FIELDS.items() if "integer" in spec["schema"]["type"]]
SAMPLES: list[Any] = [-1, 0, 0.001, 0.5, 1, 2.5, 3, 60, "abc", True]


def form_accepts(name: str, value: Any) -> bool:
    try:
        jsonschema.validate(value, FIELDS[name]["schema"])
    except jsonschema.ValidationError:
        return False
    return True


def hook_accepts(name: str, value: Any) -> bool:
    try:
        settings_from_connection(
            "form",
            host="http://127.0.0.1:9/v1",
            password=None,
            extra={"provider": "openai", name: value},
        )
    except PortkeyConfigError as error:
        assert f"extra '{name}'" in str(error), "the refusal names the field"
        return False
    return True


@pytest.mark.parametrize("name", NUMBER_FIELDS + INTEGER_FIELDS)
@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_numeric_field_bounds_and_type_agree_with_the_hook(name: str, value: Any) -> None:
    assert form_accepts(name, value) == hook_accepts(name, value), (name, value)


@pytest.mark.parametrize("name", NUMBER_FIELDS + INTEGER_FIELDS)
def test_numeric_field_default_is_accepted_by_both(name: str) -> None:
    default = FIELDS[name]["schema"]["default"]
    assert form_accepts(name, default) and hook_accepts(name, default)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("false", False),
        (True, True),
        (False, False),
        ("/etc/ca.pem", "/etc/ca.pem"),
    ],
)
def test_verify_takes_true_false_or_a_ca_path_as_text(value: Any, expected: bool | str) -> None:
    assert "string" in FIELDS["verify"]["schema"]["type"], "a text field can hold a CA path"
    settings = settings_from_connection(
        "form",
        host="https://x.test/v1",
        password="pk",
        extra={"provider": "openai", "verify": value},
    )
    assert settings.verify == expected


def test_every_field_has_a_label_and_a_sentence_of_help() -> None:
    for name, spec in FIELDS.items():
        assert spec["label"] and spec["label"][0].isupper(), name
        assert len(spec["description"].split()) >= 4, f"{name}: help text too short"


def test_every_text_field_value_from_the_form_is_accepted_by_the_hook() -> None:
    """What the form sends for text fields: strings (an example if it offers one)."""
    extra = {
        "provider": "openai",
        "secret_virtual_key": "vk-form",
        "secret_config": '{"retry": {"attempts": 2}}',
        "provider_api_key": "sk-form",
        "custom_host": "https://upstream.test/v1",
        "openai_organization": "org-1",
        "openai_project": "proj_1",
        "verify": "false",
        "secret_headers": '{"x-portkey-aws-secret-access-key": "aws-secret-form"}',
        "metadata": '{"team": "ml"}',
    }
    assert set(extra) | {
        "request_timeout",
        "connect_timeout",
        "max_retries",
        "retry_budget",
        "max_requests_per_second",
    } == set(FIELDS)
    settings = settings_from_connection("form", host=None, password="pk", extra=extra)
    assert settings.deprecated_extras == ()
    assert "aws-secret-form" in settings.secrets


# -- Airflow's masker, configured as Airflow configures it ----------------------------------


@pytest.fixture(scope="module")
def airflow_redact() -> Any:
    from airflow import settings

    settings._configure_secrets_masker()
    from airflow._shared.secrets_masker import redact, should_hide_value_for_key

    return redact, should_hide_value_for_key


@pytest.mark.parametrize("name", sorted(PortkeyHook.secret_fields))
def test_airflow_redacts_every_credential_field_by_its_name(airflow_redact: Any, name: str) -> None:
    _, should_hide = airflow_redact
    assert should_hide(name)
    assert should_hide(f"extra__portkey__{name}"), "the UI's prefixed name too"


@pytest.mark.parametrize("old", sorted(SECRET_EXTRAS))
def test_the_deprecated_names_are_the_ones_airflow_shows(airflow_redact: Any, old: str) -> None:
    _, should_hide = airflow_redact
    assert not should_hide(old), f"{old} is redacted after all: no need to rename it"


def test_airflow_redacts_a_full_extra_leaving_routing_visible(airflow_redact: Any) -> None:
    redact, _ = airflow_redact
    extra = {
        "provider": "openai",
        "secret_virtual_key": "vk-SECRET",
        "secret_config": {"provider": "openai", "api_key": "sk-SECRET-inline"},
        "provider_api_key": "sk-SECRET",
        "secret_headers": {"x-custom": "SECRET-header"},
        "metadata": {"team": "ml"},
    }
    shown = json.dumps(redact(extra))
    assert "SECRET" not in shown
    assert '"provider": "openai"' in shown and '"team": "ml"' in shown
