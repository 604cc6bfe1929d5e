"""Connection fields -> checked settings and the headers every request carries; a connection
that cannot work is refused with a message naming the connection and the field. Pure: the
rules of ``airflow_portkey._core.settings``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_portkey._core.settings import settings_from_connection
from airflow_portkey.exceptions import PortkeyConfigError

API_KEY = "pk-core-test-key"
PROVIDER_API_KEY = "sk-core-provider-key"
HOST = "http://127.0.0.1:8787/v1"


def settings(
    extra: dict[str, Any], *, host: str | None = HOST, password: str | None = API_KEY, **kw: Any
) -> Any:
    return settings_from_connection("pk_core", host=host, password=password, extra=extra, **kw)


# -- connection kinds -> headers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("extras", "expected"),
    [
        pytest.param(
            {"virtual_key": "vk-openai-prod"},
            {"x-portkey-api-key": API_KEY, "x-portkey-virtual-key": "vk-openai-prod"},
            id="virtual-key",
        ),
        pytest.param(
            {"provider": "@openai-prod"},
            {"x-portkey-api-key": API_KEY, "x-portkey-provider": "@openai-prod"},
            id="provider-slug",
        ),
        pytest.param(
            {"config": "pc-abc"},
            {"x-portkey-api-key": API_KEY, "x-portkey-config": "pc-abc"},
            id="config-id",
        ),
        pytest.param(
            {"config": {"provider": "openai", "retry": {"attempts": 3}}},
            {
                "x-portkey-api-key": API_KEY,
                "x-portkey-config": '{"provider":"openai","retry":{"attempts":3}}',
            },
            id="config-json-object",
        ),
        pytest.param(
            {"config": '{ "provider": "openai",\n  "retry": { "attempts": 3 } }'},
            {
                "x-portkey-api-key": API_KEY,
                "x-portkey-config": '{"provider":"openai","retry":{"attempts":3}}',
            },
            id="config-json-text",
        ),
        pytest.param(
            {
                "provider": "openai",
                "provider_api_key": PROVIDER_API_KEY,
                "custom_host": "http://llm.internal:8000/v1",
            },
            {
                "x-portkey-api-key": API_KEY,
                "x-portkey-provider": "openai",
                "authorization": f"Bearer {PROVIDER_API_KEY}",
                "x-portkey-custom-host": "http://llm.internal:8000/v1",
            },
            id="provider-name-key-custom-host",
        ),
        pytest.param(
            {
                "virtual_key": "vk-openai-prod",
                "openai_project": "proj_123",
                "openai_organization": "org-456",
            },
            {
                "x-portkey-api-key": API_KEY,
                "x-portkey-virtual-key": "vk-openai-prod",
                "x-portkey-openai-project": "proj_123",
                "x-portkey-openai-organization": "org-456",
            },
            id="openai-project-organization",
        ),
        pytest.param(
            {"extra__portkey__virtual_key": "vk-from-ui", "extra__portkey__provider": ""},
            {"x-portkey-api-key": API_KEY, "x-portkey-virtual-key": "vk-from-ui"},
            id="ui-prefixed-extras",
        ),
    ],
)
def test_connection_kind_gives_exact_headers(
    extras: dict[str, Any], expected: dict[str, str]
) -> None:
    headers = {name.lower(): value for name, value in settings(extras).headers().items()}
    assert headers == {"accept": "application/json", **expected}


@pytest.mark.parametrize(
    "headers_extra",
    [
        {"x-portkey-cache-force-refresh": "true", "X-Team": "data"},
        json.dumps({"x-portkey-cache-force-refresh": "true", "X-Team": "data"}),
    ],
    ids=["object", "json-text"],
)
def test_extra_headers_are_added(headers_extra: object) -> None:
    headers = settings({"virtual_key": "vk-1", "headers": headers_extra}).headers()
    assert headers["x-portkey-cache-force-refresh"] == "true"
    assert headers["X-Team"] == "data"
    assert headers["x-portkey-virtual-key"] == "vk-1"


def test_self_hosted_gateway_needs_no_portkey_key() -> None:
    extras = {"provider": "openai", "provider_api_key": PROVIDER_API_KEY}
    headers = settings(extras, password=None).headers()
    assert "x-portkey-api-key" not in headers
    assert headers["Authorization"] == f"Bearer {PROVIDER_API_KEY}"


def test_unknown_extras_are_named_sorted() -> None:
    found = settings({"virtual_key": "vk-1", "virutal_key": "vk-typo", "timeout": 3})
    assert found.unknown_extras == ("timeout", "virutal_key")


# -- refused before any request ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "password", "extras", "words"),
    [
        pytest.param(
            None,
            API_KEY,
            {},
            ["extras", "'provider'", "'secret_virtual_key'", "'secret_config'"],
            id="no-route",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "  ", "virtual_key": "", "config": None},
            ["'provider'", "'secret_virtual_key'", "'secret_config'"],
            id="blank-route",
        ),
        pytest.param(
            None,
            API_KEY,
            {"config": "my-config"},
            ["extra 'config'", "'pc-'", "JSON object"],
            id="config-neither-json-nor-id",
        ),
        pytest.param(
            None,
            API_KEY,
            {"config": "{not json"},
            ["extra 'config'", "does not parse"],
            id="config-broken-json",
        ),
        pytest.param(
            None,
            API_KEY,
            {"config": "[1, 2]"},
            ["extra 'config'"],
            id="config-json-not-object",
        ),
        pytest.param(None, API_KEY, {"config": 42}, ["extra 'config'"], id="config-not-text"),
        pytest.param("not a url", API_KEY, {"provider": "@x"}, ["host"], id="host-with-spaces"),
        pytest.param("ftp://files.example", API_KEY, {"provider": "@x"}, ["host"], id="host-ftp"),
        pytest.param("http://", API_KEY, {"provider": "@x"}, ["host"], id="host-no-name"),
        pytest.param(
            "http://gw.example/v1?x=1", API_KEY, {"provider": "@x"}, ["host"], id="host-query"
        ),
        pytest.param(
            "http://gw.example:99999/v1", API_KEY, {"provider": "@x"}, ["host"], id="host-port"
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "request_timeout": -1},
            ["extra 'request_timeout'", "greater than 0"],
            id="request-timeout-negative",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "request_timeout": 0},
            ["extra 'request_timeout'", "greater than 0"],
            id="request-timeout-zero",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "request_timeout": "soon"},
            ["extra 'request_timeout'", "number"],
            id="request-timeout-text",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "connect_timeout": 0},
            ["extra 'connect_timeout'", "greater than 0"],
            id="connect-timeout-zero",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "connect_timeout": -2.5},
            ["extra 'connect_timeout'", "greater than 0"],
            id="connect-timeout-negative",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "max_retries": -1},
            ["extra 'max_retries'", "at least 0"],
            id="max-retries-negative",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "max_requests_per_second": 0},
            ["extra 'max_requests_per_second'", "greater than 0"],
            id="max-requests-per-second-zero",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "max_requests_per_second": "fast"},
            ["extra 'max_requests_per_second'", "number"],
            id="max-requests-per-second-text",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "max_requests_per_second": True},
            ["extra 'max_requests_per_second'", "number"],
            id="max-requests-per-second-bool",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "headers": "not json"},
            ["extra 'headers'", "JSON object"],
            id="headers-not-json",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "headers": {"X-Evil": "a\r\nInjected: 1"}},
            ["extra 'headers'", "line breaks"],
            id="headers-line-break",
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "@x", "headers": {"X Evil": "1"}},
            ["extra 'headers'", "'X Evil' is not a valid header name"],
            id="headers-bad-name",
        ),
        pytest.param(
            None,
            "pk-1\nX-Injected: 1",
            {"provider": "@x"},
            ["password", "line breaks"],
            id="api-key-line-break",
        ),
        pytest.param(
            None,
            API_KEY,
            {"virtual_key": "vk-1\r\nX-Injected: 1"},
            ["extra 'virtual_key'", "line breaks"],
            id="virtual-key-line-break",
        ),
        pytest.param(
            "https://api.portkey.ai/v1",
            None,
            {"virtual_key": "vk-1"},
            ["password", "API key"],
            id="hosted-without-api-key",
        ),
        pytest.param(
            "https://api.portkey.ai",
            "   ",
            {"provider": "@openai-prod"},
            ["password", "API key"],
            id="hosted-blank-api-key",
        ),
    ],
)
def test_unusable_connection_is_refused_naming_the_field(
    host: str | None, password: str | None, extras: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(PortkeyConfigError) as raised:
        settings(extras, host=host or HOST, password=password)
    message = str(raised.value)
    assert message.startswith("Portkey connection 'pk_core': ")
    for word in words:
        assert word in message


def test_no_host_means_hosted_portkey_which_needs_an_api_key() -> None:
    with pytest.raises(PortkeyConfigError, match=r"'pk_core': password is empty"):
        settings({"provider": "@openai-prod"}, host=None, password=None)


@pytest.mark.parametrize(
    "config",
    ['{"api_key": "sk-secret-in-config"', "pc-has space sk-secret-in-config"],
    ids=["broken-json", "bad-id"],
)
def test_a_refused_config_is_not_echoed(config: str) -> None:
    with pytest.raises(PortkeyConfigError) as raised:
        settings({"config": config})
    assert "sk-secret-in-config" not in str(raised.value)
    assert "extra 'config'" in str(raised.value)


def test_secrets_are_every_credential_and_those_inside_an_inline_config() -> None:
    config = {"provider": "openai", "api_key": "sk-in-config", "targets": [{"token": "t-1"}]}
    found = settings({"virtual_key": "vk-1", "provider_api_key": "sk-p", "config": config}).secrets
    assert set(found) == {
        API_KEY,
        "vk-1",
        "sk-p",
        json.dumps(config, separators=(",", ":")),
        "sk-in-config",
        "t-1",
    }


# -- pure settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "schema", "base_url"),
    [
        (None, None, None, "https://api.portkey.ai/v1"),
        ("", None, None, "https://api.portkey.ai/v1"),
        ("https://api.portkey.ai/v1/", None, None, "https://api.portkey.ai/v1"),
        ("gateway.internal", 8787, "http", "http://gateway.internal:8787"),
        ("gateway.internal/v1", None, None, "https://gateway.internal/v1"),
        ("http://127.0.0.1:8787/v1", 9999, None, "http://127.0.0.1:8787/v1"),
    ],
)
def test_base_url_from_host_port_schema(
    host: str | None, port: int | None, schema: str | None, base_url: str
) -> None:
    settings = settings_from_connection(
        "pk", host=host, password="pk-x", extra={"provider": "@p"}, port=port, schema=schema
    )
    assert settings.base_url == base_url


def test_timeouts_and_retries_from_extras() -> None:
    settings = settings_from_connection(
        "pk",
        host="http://gw:8787/v1",
        password=None,
        extra={
            "provider": "openai",
            "request_timeout": "12.5",
            "connect_timeout": 2,
            "max_retries": "3",
            "retry_budget": 30,
            "verify": "false",
        },
    )
    assert (settings.read_timeout, settings.connect_timeout) == (12.5, 2.0)
    assert (settings.max_retries, settings.retry_budget) == (3, 30.0)
    assert settings.verify is False
    assert settings.api_key is None
    assert not settings.is_hosted


def test_max_requests_per_second_is_off_unless_set() -> None:
    unset = settings_from_connection("pk", host=None, password="pk-x", extra={"provider": "@p"})
    blank = settings_from_connection(
        "pk", host=None, password="pk-x", extra={"provider": "@p", "max_requests_per_second": ""}
    )
    capped = settings_from_connection(
        "pk", host=None, password="pk-x", extra={"provider": "@p", "max_requests_per_second": "45"}
    )
    assert (unset.max_requests_per_second, blank.max_requests_per_second) == (None, None)
    assert capped.max_requests_per_second == 45.0
    assert not capped.unknown_extras


def test_defaults_give_every_request_a_timeout() -> None:
    settings = settings_from_connection("pk", host=None, password="pk-x", extra={"provider": "@p"})
    assert settings.connect_timeout > 0 and settings.read_timeout > 0
    assert settings.is_hosted


# -- credential extras under names Airflow redacts ---------------------------------------------


def test_old_credential_names_still_route_and_are_reported_for_migration() -> None:
    found = settings(
        {"virtual_key": "vk-old", "config": "pc-old", "headers": {"x-portkey-aws-secret": "aws-v"}}
    )
    assert (found.virtual_key, found.config) == ("vk-old", "pc-old")
    assert found.extra_headers == {"x-portkey-aws-secret": "aws-v"}
    assert found.deprecated_extras == ("virtual_key", "config", "headers")
    assert found.unknown_extras == ()
    hint = found.migration_hint()
    assert hint is not None
    assert "rename 'virtual_key' to 'secret_virtual_key', 'config' to 'secret_config', " in hint
    assert "'headers' to 'secret_headers'" in hint


def test_the_current_name_wins_over_the_old_one() -> None:
    found = settings({"secret_virtual_key": "vk-new", "virtual_key": "vk-old"})
    assert found.virtual_key == "vk-new"
    assert found.deprecated_extras == ("virtual_key",)


def test_current_names_need_no_migration() -> None:
    found = settings({"secret_virtual_key": "vk-new", "secret_headers": {"x-a": "b"}})
    assert found.deprecated_extras == () and found.migration_hint() is None


def test_every_header_value_is_a_secret() -> None:
    found = settings({"provider": "openai", "secret_headers": '{"x-amz-token": "tok-123456"}'})
    assert "tok-123456" in found.secrets


def test_an_error_names_the_extra_as_the_user_spelled_it() -> None:
    with pytest.raises(PortkeyConfigError, match="extra 'config' must be a config id"):
        settings({"config": "not-a-config"})
    with pytest.raises(PortkeyConfigError, match="extra 'secret_config' must be a config id"):
        settings({"secret_config": "not-a-config"})


def test_every_string_inside_an_inline_config_is_a_secret_but_routing_fields() -> None:
    # A provider credential under any name (a service account, a custom header) is a secret;
    # routing fields and bare words are not, so logs and batch ids keep them.
    config = {
        "provider": "vertex-ai",
        "vertex_region": "us-central1",
        "strategy": {"mode": "fallback"},
        "vertex_service_account_json": '{"private_key": "-----BEGIN"}',
        "custom_headers": {"Authorization": "Bearer-opaque-99"},
        "targets": [{"provider": "openai", "override_params": {"model": "gpt-4o-mini"}}],
        "override_params": {"user": "svc-opaque-88"},
    }
    found = set(settings({"config": config}).secrets)
    assert {'{"private_key": "-----BEGIN"}', "Bearer-opaque-99", "svc-opaque-88"} <= found
    assert not {"vertex-ai", "us-central1", "fallback", "openai", "gpt-4o-mini"} & found


@pytest.mark.parametrize(
    "host",
    [
        "http://gateway:hunter2-SECRET@gw.example/v1",
        "https://hunter2-SECRET@gw.example:8787/v1",
        "gateway:hunter2-SECRET@gw.example/v1",  # a URI-style host, without a scheme
        "http://gateway:hunter2-SECRET@gw.example:99999/v1",  # the bad port is not echoed
    ],
    ids=["user-and-password", "user-only", "no-scheme", "bad-port"],
)
def test_a_password_in_the_base_url_is_refused_naming_the_field_not_the_password(
    host: str,
) -> None:
    with pytest.raises(PortkeyConfigError) as raised:
        settings({"provider": "@x"}, host=host)
    message = str(raised.value)
    assert message.startswith("Portkey connection 'pk_core': host (the Base URL field) must not")
    assert "Portkey API key field" in message
    assert "hunter2-SECRET" not in message


@pytest.mark.parametrize(
    "shape",
    ["\t{}", " {}", "{}\t", "{} ", "{}\x01x", "x\x1b{}", "{}\x7f", "a\t{}"],
    ids=[
        "leading-tab",
        "leading-space",
        "trailing-tab",
        "trailing-space",
        "soh",
        "esc",
        "del",
        "inner-tab",
    ],
)
def test_a_header_value_http_cannot_carry_is_refused_naming_the_header_not_the_value(
    shape: str,
) -> None:
    # requests refuses it quoting the value (and its repr of a tab escapes the secret past
    # redaction): refused here, before any request.
    value = shape.format("aws-SECRET-7d1e")
    with pytest.raises(PortkeyConfigError) as raised:
        settings({"provider": "@x", "secret_headers": {"x-portkey-aws-secret-access-key": value}})
    message = str(raised.value)
    assert "extra 'secret_headers'" in message and "'x-portkey-aws-secret-access-key'" in message
    assert "aws-SECRET" not in message and "7d1e" not in message


def test_header_values_with_inner_spaces_and_non_ascii_are_kept() -> None:
    headers = {"x-portkey-aws-session-token": "a b c", "x-note": "café", "x-empty": ""}
    assert settings({"provider": "@x", "secret_headers": headers}).extra_headers == headers


@pytest.mark.parametrize(
    "mark", ["\u2028", "\u200b", "\u20ac"], ids=["line-sep", "zero-width", "euro"]
)
@pytest.mark.parametrize(
    ("field", "named"),
    [
        ("password", "password"),
        ("secret_virtual_key", "extra 'secret_virtual_key'"),
        ("provider_api_key", "extra 'provider_api_key'"),
        ("secret_headers", "extra 'secret_headers'"),
    ],
)
def test_a_key_a_header_cannot_carry_is_refused_naming_the_field_not_the_value(
    mark: str, field: str, named: str
) -> None:
    """An invisible, line-separator or non-Latin-1 character in a key failed every request of
    the sync path as a retried encoding error: refused here, before any request."""
    value = f"pk-SECRET{mark}4f2a"
    extras: dict[str, Any] = {"provider": "@x"}
    password = API_KEY
    if field == "password":
        password = value
    elif field == "secret_headers":
        extras["secret_headers"] = {"x-portkey-aws-secret-access-key": value}
    else:
        extras[field] = value
    with pytest.raises(PortkeyConfigError) as raised:
        settings(extras, password=password)
    message = str(raised.value)
    assert named in message
    assert "SECRET" not in message and "4f2a" not in message
