"""Connection -> the headers Portkey receives; unusable connections refused before any request."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_portkey._core.settings import settings_from_connection
from airflow_portkey.exceptions import PortkeyConfigError
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

from .support import API_KEY, CONN_ID, FAST_RETRIES, PROVIDER_API_KEY, MakeHook, run_async

# Every header the hook may set from a connection; each case names the ones it expects.
ROUTING_HEADERS = (
    "x-portkey-api-key",
    "x-portkey-virtual-key",
    "x-portkey-provider",
    "x-portkey-config",
    "x-portkey-custom-host",
    "x-portkey-openai-organization",
    "x-portkey-openai-project",
    "authorization",
)


def _routing(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name in ROUTING_HEADERS}


def _get_one(emulator: PortkeyEmulator, hook: PortkeyHook) -> dict[str, str]:
    """Read a seeded batch through the hook; the headers the emulator received."""
    batch = emulator.add_batch()
    assert hook.get_batch(batch["id"]).id == batch["id"]
    (request,) = emulator.requests
    assert (request.method, request.path) == ("GET", f"/v1/batches/{batch['id']}")
    return request.headers


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
def test_connection_kind_sends_exact_headers(
    emulator: PortkeyEmulator, make_hook: MakeHook, extras: dict[str, Any], expected: dict[str, str]
) -> None:
    headers = _get_one(emulator, make_hook(**extras))
    assert _routing(headers) == expected
    assert headers["accept"] == "application/json"


@pytest.mark.parametrize(
    "headers_extra",
    [
        {"x-portkey-cache-force-refresh": "true", "X-Team": "data"},
        json.dumps({"x-portkey-cache-force-refresh": "true", "X-Team": "data"}),
    ],
    ids=["object", "json-text"],
)
def test_extra_headers_are_sent(
    emulator: PortkeyEmulator, make_hook: MakeHook, headers_extra: object
) -> None:
    headers = _get_one(emulator, make_hook(headers=headers_extra))
    assert headers["x-portkey-cache-force-refresh"] == "true"
    assert headers["x-team"] == "data"
    assert headers["x-portkey-virtual-key"] == "vk-unit"


def test_self_hosted_gateway_needs_no_portkey_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Self-hosted: provider name + provider key (Bearer) + custom host, no Portkey API key."""
    with PortkeyEmulator(mode="upstream", provider_api_key=PROVIDER_API_KEY) as upstream:
        batch = upstream.add_batch()
        monkeypatch.setenv(
            "AIRFLOW_CONN_PK_GATEWAY",
            json.dumps(
                {
                    "conn_type": "portkey",
                    "host": upstream.base_url,
                    "extra": {
                        "provider": "openai",
                        "provider_api_key": PROVIDER_API_KEY,
                        "custom_host": "http://upstream.local:9000/v1",
                    },
                }
            ),
        )
        hook = PortkeyHook("pk_gateway", retry_policy=FAST_RETRIES)
        assert hook.get_batch(batch["id"]).id == batch["id"]
        (request,) = upstream.requests
    assert _routing(request.headers) == {
        "x-portkey-provider": "openai",
        "authorization": f"Bearer {PROVIDER_API_KEY}",
        "x-portkey-custom-host": "http://upstream.local:9000/v1",
    }


def test_default_connection_from_env_json(
    emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_PORTKEY_DEFAULT",
        json.dumps(
            {
                "conn_type": "portkey",
                "host": emulator.base_url,
                "password": API_KEY,
                "extra": {"provider": "@openai-prod", "request_timeout": 5},
            }
        ),
    )
    hook = PortkeyHook()
    assert hook.portkey_conn_id == "portkey_default"
    headers = _get_one(emulator, hook)
    assert _routing(headers) == {"x-portkey-api-key": API_KEY, "x-portkey-provider": "@openai-prod"}
    assert hook.settings.read_timeout == 5.0


def test_default_connection_from_emulator_helpers(
    emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emulator's own AIRFLOW_CONN_ helpers (JSON and URI) give working connections."""
    monkeypatch.setenv("AIRFLOW_CONN_PORTKEY_DEFAULT", emulator.airflow_conn_json())
    monkeypatch.setenv("AIRFLOW_CONN_PORTKEY_URI", emulator.airflow_conn_uri(virtual_key="vk-u"))
    batch = emulator.add_batch()
    assert PortkeyHook().get_batch(batch["id"]).id == batch["id"]
    assert PortkeyHook("portkey_uri").get_batch(batch["id"]).id == batch["id"]
    first, second = emulator.requests
    assert first.headers["authorization"] == f"Bearer {PROVIDER_API_KEY}"
    assert first.headers["x-portkey-provider"] == "openai"
    assert second.headers["x-portkey-virtual-key"] == "vk-u"
    assert second.path == f"/v1/batches/{batch['id']}"


def test_unknown_extras_are_logged_by_name(
    emulator: PortkeyEmulator, make_hook: MakeHook, logs: pytest.LogCaptureFixture
) -> None:
    _get_one(emulator, make_hook(virutal_key="vk-typo-value", timeout=3))
    assert f"Portkey connection '{CONN_ID}' has extras this provider does not read" in logs.text
    assert "timeout, virutal_key" in logs.text
    assert "vk-typo-value" not in logs.text


# -- refused before any request ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "password", "extras", "words"),
    [
        pytest.param(
            None, API_KEY, {}, ["extras", "'provider'", "'virtual_key'", "'config'"], id="no-route"
        ),
        pytest.param(
            None,
            API_KEY,
            {"provider": "  ", "virtual_key": "", "config": None},
            ["'provider'", "'virtual_key'", "'config'"],
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
def test_unusable_connection_is_refused_before_any_request(
    emulator: PortkeyEmulator,
    monkeypatch: pytest.MonkeyPatch,
    host: str | None,
    password: str | None,
    extras: dict[str, Any],
    words: list[str],
) -> None:
    body: dict[str, Any] = {"conn_type": "portkey", "host": host or emulator.base_url}
    if password is not None:
        body["password"] = password
    body["extra"] = extras
    monkeypatch.setenv("AIRFLOW_CONN_PK_BAD", json.dumps(body))
    batch = emulator.add_batch()

    with pytest.raises(PortkeyConfigError) as sync_error:
        PortkeyHook("pk_bad").get_batch(batch["id"])
    with pytest.raises(PortkeyConfigError) as cancel_error:
        PortkeyHook("pk_bad").cancel_batch(batch["id"])
    async_hook = PortkeyHook("pk_bad")
    with pytest.raises(PortkeyConfigError) as async_error:
        run_async(async_hook, lambda: async_hook.aget_batch(batch["id"]))

    for error in (sync_error.value, cancel_error.value, async_error.value):
        message = str(error)
        assert "Portkey connection 'pk_bad'" in message
        for word in words:
            assert word in message
    assert str(sync_error.value) == str(async_error.value) == str(cancel_error.value)
    assert emulator.requests == []


def test_hosted_default_host_without_api_key_is_refused(
    emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No host means api.portkey.ai, which needs an API key: refused, nothing sent anywhere."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_PK_NOKEY",
        json.dumps({"conn_type": "portkey", "extra": {"provider": "@openai-prod"}}),
    )
    hook = PortkeyHook("pk_nokey")
    with pytest.raises(PortkeyConfigError, match=r"'pk_nokey': password is empty"):
        hook.get_batch("batch_abc")
    ok, message = hook.test_connection()
    assert ok is False
    assert "password is empty" in message
    assert emulator.requests == []


def test_connection_of_another_type_is_refused(
    emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SOME_HTTP",
        json.dumps(
            {
                "conn_type": "http",
                "host": emulator.base_url,
                "password": API_KEY,
                "extra": {"virtual_key": "vk-1"},
            }
        ),
    )
    with pytest.raises(PortkeyConfigError) as error:
        PortkeyHook("some_http").cancel_batch("batch_abc")
    assert str(error.value) == (
        "Airflow connection 'some_http' is of type 'http'; "
        "PortkeyHook needs a connection of type 'portkey'"
    )
    assert emulator.requests == []


def test_missing_connection_is_an_airflow_not_found_error(emulator: PortkeyEmulator) -> None:
    hook = PortkeyHook("portkey_does_not_exist")
    with pytest.raises(AirflowNotFoundException, match="portkey_does_not_exist"):
        hook.get_batch("batch_abc")
    with pytest.raises(AirflowNotFoundException, match="portkey_does_not_exist"):
        run_async(hook, lambda: hook.acancel_batch("batch_abc"))
    assert emulator.requests == []


def test_test_connection_names_the_unusable_field(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    ok, message = make_hook(config="not-a-config").test_connection()
    assert ok is False
    assert "extra 'config'" in message
    assert "not-a-config" not in message
    assert emulator.requests == []


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


def test_defaults_give_every_request_a_timeout() -> None:
    settings = settings_from_connection("pk", host=None, password="pk-x", extra={"provider": "@p"})
    assert settings.connect_timeout > 0 and settings.read_timeout > 0
    assert settings.is_hosted
