"""Credentials never reach a log line, an exception message or an XCom value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.log import redact

from airflow_portkey.exceptions import PortkeyError
from airflow_portkey.hooks._connections import min_masked_length
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

from .support import FAST_RETRIES, run_async, set_connection

API_KEY = "pk-SECRET-api-9f8e7d6c5b"
VIRTUAL_KEY = "vk-SECRET-virtual-1a2b3c4d"
PROVIDER_KEY = "sk-SECRET-provider-5e6f7a8b"
CONFIG_ID = "pc-SECRET-config-0c1d2e3f"
HEADER_VALUE = "aws-SECRET-header-9a8b7c6d"
SECRETS = {
    "api key": API_KEY,
    "virtual key": VIRTUAL_KEY,
    "provider key": PROVIDER_KEY,
    "config": CONFIG_ID,
    "header value": HEADER_VALUE,
}
CONN = "portkey_secret"


@pytest.fixture
def secret_emulator() -> Iterator[PortkeyEmulator]:
    with PortkeyEmulator(
        api_key=API_KEY, provider_api_key=PROVIDER_KEY, in_progress_s=300, cancel_delay_s=60
    ) as emu:
        yield emu


@pytest.fixture
def secret_hook(secret_emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch) -> PortkeyHook:
    """A connection holding every kind of secret at once."""
    set_connection(
        monkeypatch,
        CONN,
        host=secret_emulator.base_url,
        password=API_KEY,
        extra={
            "secret_virtual_key": VIRTUAL_KEY,
            "provider": "openai",
            "provider_api_key": PROVIDER_KEY,
            "secret_config": CONFIG_ID,
            "secret_headers": {"x-portkey-aws-secret-access-key": HEADER_VALUE},
        },
    )
    return PortkeyHook(CONN, retry_policy=FAST_RETRIES)


def assert_no_secret(text: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"the {name} leaked"
        assert "SECRET" not in text, f"part of the {name} leaked"


def error_texts(error: BaseException) -> str:
    return "\n".join(
        [str(error), repr(error), *map(str, error.args), *getattr(error, "__notes__", [])]
    )


def test_succeeding_calls_leak_nothing(
    secret_emulator: PortkeyEmulator, secret_hook: PortkeyHook, logs: pytest.LogCaptureFixture
) -> None:
    batch_id = secret_emulator.add_batch(status="in_progress", metadata={"team": "ml"})["id"]
    read = secret_hook.get_batch(batch_id)
    cancelled = secret_hook.cancel_batch(batch_id)
    listed = list(secret_hook.list_batches())
    ok, message = secret_hook.test_connection()
    assert ok is True
    # The secrets did reach Portkey, where they belong.
    headers = secret_emulator.requests[0].headers
    assert headers["x-portkey-api-key"] == API_KEY
    assert headers["x-portkey-virtual-key"] == VIRTUAL_KEY
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert headers["x-portkey-config"] == CONFIG_ID
    assert headers["x-portkey-aws-secret-access-key"] == HEADER_VALUE
    assert "Cancel requested" in logs.text
    assert_no_secret(logs.text)
    assert_no_secret(message)
    for batch in (read, cancelled, *listed):
        assert_no_secret(json.dumps(batch.to_xcom()))


@pytest.mark.parametrize("name", list(SECRETS))
def test_error_echoing_a_secret_is_redacted(
    secret_emulator: PortkeyEmulator,
    secret_hook: PortkeyHook,
    logs: pytest.LogCaptureFixture,
    name: str,
) -> None:
    """Redaction for every status is proven in tests/core/test_answers.py."""
    secret = SECRETS[name]
    body = {"error": {"message": f"Key {secret} is not valid here", "type": "auth"}}
    secret_emulator.add_fault("status", times=None, status=400, body=body)
    with pytest.raises(PortkeyError) as raised:
        secret_hook.get_batch("batch_abc")
    text = error_texts(raised.value)
    assert "Key *** is not valid here" in text
    assert_no_secret(text)
    assert_no_secret(logs.text)


@pytest.mark.parametrize("shape", ["gateway", "provider"])
def test_lasting_5xx_echoing_the_api_key_is_redacted(
    secret_emulator: PortkeyEmulator,
    secret_hook: PortkeyHook,
    logs: pytest.LogCaptureFixture,
    shape: str,
) -> None:
    message = f"upstream rejected {API_KEY} and {PROVIDER_KEY}"
    body: dict[str, Any] = (
        {"status": "failure", "message": message}
        if shape == "gateway"
        else {"error": {"message": message}, "provider": "openai"}
    )
    secret_emulator.add_fault("status", times=None, status=500, body=body)
    with pytest.raises(PortkeyError) as raised:
        secret_hook.cancel_batch("batch_abc")
    assert "upstream rejected *** and ***" in str(raised.value)
    assert_no_secret(error_texts(raised.value))
    assert "retry 2 of 2" in logs.text
    assert_no_secret(logs.text)
    assert len(secret_emulator.requests) == 3


def test_html_error_page_echoing_a_key_is_redacted(
    secret_emulator: PortkeyEmulator, secret_hook: PortkeyHook
) -> None:
    page = f"<html><head><title>Denied for {VIRTUAL_KEY}</title></head><body>no</body></html>"
    secret_emulator.add_fault("status", times=None, status=403, body=page, content_type="text/html")
    with pytest.raises(PortkeyError) as raised:
        secret_hook.get_batch("batch_abc")
    assert "Denied for ***" in str(raised.value)
    assert_no_secret(error_texts(raised.value))


def test_async_error_echoing_a_secret_is_redacted(
    secret_emulator: PortkeyEmulator, secret_hook: PortkeyHook, logs: pytest.LogCaptureFixture
) -> None:
    secret_emulator.add_fault(
        "status",
        times=None,
        status=401,
        body={"status": "failure", "message": f"bad config {CONFIG_ID}"},
    )
    with pytest.raises(PortkeyError) as raised:
        run_async(secret_hook, lambda: secret_hook.acancel_batch("batch_abc"))
    assert "bad config ***" in str(raised.value)
    assert_no_secret(error_texts(raised.value))
    assert_no_secret(logs.text)


def test_transport_failures_leak_nothing(
    secret_emulator: PortkeyEmulator, secret_hook: PortkeyHook, logs: pytest.LogCaptureFixture
) -> None:
    secret_emulator.add_fault("drop", times=None)
    with pytest.raises(PortkeyError) as dropped:
        secret_hook.get_batch("batch_abc")
    secret_emulator.clear_faults()
    secret_emulator.add_fault("malformed_json", times=None)
    with pytest.raises(PortkeyError) as malformed:
        secret_hook.get_batch("batch_abc")
    assert_no_secret(error_texts(dropped.value))
    assert_no_secret(error_texts(malformed.value))
    assert_no_secret(logs.text)


def test_failed_connection_test_leaks_nothing(
    secret_emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "pk-SECRET-wrong-key-4242"
    set_connection(
        monkeypatch,
        "portkey_wrong",
        host=secret_emulator.base_url,
        password=wrong,
        extra={"secret_virtual_key": VIRTUAL_KEY},
    )
    ok, message = PortkeyHook("portkey_wrong", retry_policy=FAST_RETRIES).test_connection()
    assert ok is False
    assert "401" in message and "Invalid API Key" in message and "API key field" in message
    assert "'portkey_wrong'" in message  # says which connection to fix
    assert wrong not in message
    assert_no_secret(message)


@pytest.mark.parametrize(
    "config",
    ['{"api_key": "SECRET-in-config", broken', "SECRET-config-without-prefix"],
    ids=["broken-json", "no-prefix"],
)
def test_refused_config_is_not_echoed(
    secret_emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch, config: str
) -> None:
    set_connection(
        monkeypatch, "portkey_cfg", host=secret_emulator.base_url, extra={"config": config}
    )
    with pytest.raises(PortkeyError) as raised:
        PortkeyHook("portkey_cfg").get_batch("batch_abc")
    assert "extra 'config'" in str(raised.value)
    assert "SECRET" not in error_texts(raised.value)
    assert secret_emulator.requests == []


def test_connection_with_the_old_extra_names_works_and_says_how_to_migrate(
    secret_emulator: PortkeyEmulator,
    monkeypatch: pytest.MonkeyPatch,
    logs: pytest.LogCaptureFixture,
) -> None:
    set_connection(
        monkeypatch,
        "portkey_old_names",
        host=secret_emulator.base_url,
        password=API_KEY,
        extra={
            "virtual_key": VIRTUAL_KEY,
            "config": CONFIG_ID,
            "headers": {"x-portkey-aws-secret-access-key": HEADER_VALUE},
        },
    )
    hook = PortkeyHook("portkey_old_names")
    list(hook.list_batches())
    headers = secret_emulator.requests[0].headers
    assert headers["x-portkey-virtual-key"] == VIRTUAL_KEY
    assert headers["x-portkey-config"] == CONFIG_ID
    assert headers["x-portkey-aws-secret-access-key"] == HEADER_VALUE
    assert (
        "Portkey connection 'portkey_old_names' keeps credentials in extras that Airflow's UI "
        "and REST API show in clear: rename 'virtual_key' to 'secret_virtual_key', 'config' to "
        "'secret_config', 'headers' to 'secret_headers'"
    ) in logs.text
    for value in (VIRTUAL_KEY, CONFIG_ID, HEADER_VALUE):
        assert redact(f"value: {value}") == "value: ***"
    assert_no_secret(logs.text)


def test_every_secret_is_given_to_airflows_masker(secret_hook: PortkeyHook) -> None:
    secret_hook.settings  # noqa: B018 - loading the connection masks its secrets
    for value in SECRETS.values():
        assert redact(f"value: {value}") == "value: ***"


def test_async_settings_mask_every_secret(
    secret_emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        "api key": "pk-SECRET-async-api-5555",
        "virtual key": "vk-SECRET-async-virtual-6666",
        "provider key": "sk-SECRET-async-provider-7777",
        "config": '{"provider":"openai","note":"SECRET-async-config-8888"}',
        "header value": "SECRET-async-header-9999",
    }
    set_connection(
        monkeypatch,
        "portkey_async_mask",
        host=secret_emulator.base_url,
        password=values["api key"],
        extra={
            "secret_virtual_key": values["virtual key"],
            "provider_api_key": values["provider key"],
            "secret_config": values["config"],
            "secret_headers": {"x-amz-token": values["header value"]},
        },
    )
    hook = PortkeyHook("portkey_async_mask")
    run_async(hook, hook.aget_settings)
    for value in values.values():
        assert redact(f"value: {value}") == "value: ***"


def test_provider_key_inside_an_inline_config_is_redacted(
    secret_emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config may carry the provider's key; an error that echoes it must not show it."""
    inner = "sk-SECRET-inside-config-3141"
    set_connection(
        monkeypatch,
        "portkey_inline",
        host=secret_emulator.base_url,
        password=API_KEY,
        extra={"secret_config": {"provider": "openai", "api_key": inner}},
    )
    secret_emulator.add_fault(
        "status",
        times=None,
        status=401,
        body={"error": {"message": f"Incorrect API key provided: {inner}"}, "provider": "openai"},
    )
    with pytest.raises(PortkeyError) as raised:
        PortkeyHook("portkey_inline", retry_policy=FAST_RETRIES).get_batch("batch_abc")
    assert redact(inner) == "***"  # Airflow's masker knows it is a secret...
    assert inner not in error_texts(raised.value)  # ...the exception should too


@pytest.mark.parametrize(
    "mode",
    [
        "sync",
        "async",
    ],
)
@pytest.mark.parametrize("status", [302, 307])
def test_redirect_to_another_host_does_not_carry_the_keys(
    secret_emulator: PortkeyEmulator, secret_hook: PortkeyHook, status: int, mode: str
) -> None:
    with PortkeyEmulator() as elsewhere:
        elsewhere.add_batch(id="batch_abc")
        location = f"http://localhost:{elsewhere.port}/v1/batches/batch_abc"
        secret_emulator.add_fault("status", status=status, headers={"Location": location})
        error: PortkeyError | None = None
        try:
            if mode == "sync":
                secret_hook.get_batch("batch_abc")
            else:
                run_async(secret_hook, lambda: secret_hook.aget_batch("batch_abc"))
        except PortkeyError as raised:
            error = raised
        keys_seen_elsewhere = [
            {k: v for k, v in r.headers.items() if k.startswith("x-portkey-")}
            for r in elsewhere.requests
        ]
    assert keys_seen_elsewhere == []
    assert error is not None
    assert getattr(error, "status_code", None) == status


@pytest.mark.parametrize("value", ["1", "a", "true"])
def test_a_header_value_shorter_than_airflows_mask_minimum_leaves_ids_intact(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    # Shorter than [logging] min_length_masked_secret (5): Airflow's masker leaves it too.
    with PortkeyEmulator(api_key=API_KEY) as emulator:
        set_connection(
            monkeypatch,
            CONN,
            host=emulator.base_url,
            password=API_KEY,
            extra={
                "provider": "openai",
                "provider_api_key": PROVIDER_KEY,
                "secret_headers": {"x-portkey-trace-level": value},
            },
        )
        seeded = emulator.add_batch(status="completed")
        hook = PortkeyHook(CONN)
        batch = hook.get_batch(seeded["id"])
        written = hook.download_batch_output(seeded["id"], tmp_path / "out.jsonl")
    assert (batch.id, batch.output_file_id) == (seeded["id"], seeded["output_file_id"])
    assert written > 0


def test_the_mask_minimum_is_airflows_logging_setting(
    secret_hook: PortkeyHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__LOGGING__MIN_LENGTH_MASKED_SECRET", str(len(PROVIDER_KEY)))
    min_masked_length.cache_clear()  # read once per process, as Airflow reads it
    try:
        secret_hook.settings  # noqa: B018 - loads the connection
        assert secret_hook.loaded_secrets == (PROVIDER_KEY,)  # the only one that long
    finally:
        min_masked_length.cache_clear()
