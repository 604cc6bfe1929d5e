"""Connection -> the headers Portkey receives; unusable connections refused before any request,
alike by every call of the hook. What each field may hold and the header each gives is proven
for every case in tests/core/test_settings.py; here a few stand for them over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_portkey.exceptions import PortkeyConfigError
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

from .support import (
    API_KEY,
    CONN_ID,
    FAST_RETRIES,
    PROVIDER_API_KEY,
    MakeHook,
    run_async,
    set_connection,
)

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
            {"config": {"provider": "openai", "retry": {"attempts": 3}}},
            {
                "x-portkey-api-key": API_KEY,
                "x-portkey-config": '{"provider":"openai","retry":{"attempts":3}}',
            },
            id="config-json-object",
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
            None,
            API_KEY,
            {},
            ["extras", "'provider'", "'secret_virtual_key'", "'secret_config'"],
            id="no-route",
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
            {"provider": "@x", "secret_headers": {"x-portkey-aws-secret-access-key": "\taws-7d1e"}},
            [
                "extra 'secret_headers'",
                "'x-portkey-aws-secret-access-key'",
                "a header cannot carry",
            ],
            id="header-value-leading-tab",
        ),
        pytest.param(
            "https://api.portkey.ai/v1",
            None,
            {"virtual_key": "vk-1"},
            ["password", "API key"],
            id="hosted-without-api-key",
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
    assert "aws-7d1e" not in str(sync_error.value)
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


def test_a_password_in_the_base_url_is_refused_by_calls_and_the_test_button_unechoed(
    emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = emulator.base_url.replace("://", "://gateway:hunter2-SECRET@", 1)
    set_connection(monkeypatch, "pk_userinfo", host=host, extra={"provider": "openai"})
    with pytest.raises(PortkeyConfigError) as sync_error:
        PortkeyHook("pk_userinfo").get_batch("batch_abc")
    async_hook = PortkeyHook("pk_userinfo")
    with pytest.raises(PortkeyConfigError) as async_error:
        run_async(async_hook, lambda: async_hook.aget_batch("batch_abc"))
    ok, message = PortkeyHook("pk_userinfo").test_connection()
    assert ok is False
    for said in (str(sync_error.value), str(async_error.value), message):
        assert "host (the Base URL field) must not hold a user name or password" in said
        assert "hunter2-SECRET" not in said
    assert emulator.requests == []
