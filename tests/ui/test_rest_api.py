"""What Airflow's REST API (which its UI reads) returns for a Portkey connection's credentials,
under the extra names connections used before (shown in clear) and the names the provider
reads now (masked); and the Test endpoint against the emulator, a refusing and a silent host."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest

from .conftest import Stack

# credential, the extra it was kept in before, the extra it is kept in now, a value
CREDENTIALS: list[tuple[str, str | None, str | None, str]] = [
    ("API key", None, None, "API_KEY"),
    ("virtual key", "virtual_key", "secret_virtual_key", "vk-REST-virtual-7f31"),
    ("config id", "config", "secret_config", "pc-REST-config-9a2b"),
    (
        "inline config JSON",
        "config",
        "secret_config",
        '{"provider": "openai", "api_key": "sk-REST-inline-4c5d"}',
    ),
    ("provider key", "provider_api_key", "provider_api_key", "PROVIDER_KEY"),
    (
        "header values",
        "headers",
        "secret_headers",
        '{"x-portkey-aws-secret-access-key": "aws-REST-header-8e9f"}',
    ),
]
RESULTS: dict[str, dict[str, str]] = {}


def visible_parts(value: str) -> list[str]:
    """The distinctive texts of a credential (for JSON, the secret inside it)."""
    if value.startswith("{"):
        return [str(item) for item in json.loads(value).values() if str(item) != "openai"]
    return [value]


def shown(answer: dict[str, Any], value: str) -> str:
    text = json.dumps(answer)
    leaked = [part for part in visible_parts(value) if part in text or json.dumps(part) in text]
    return "in clear" if leaked else "masked (***)"


def create(stack: Stack, conn_id: str, extra: dict[str, Any]) -> Any:
    with contextlib.suppress(AssertionError):  # not there yet
        stack.api("DELETE", f"connections/{conn_id}")
    body = {
        "connection_id": conn_id,
        "conn_type": "portkey",
        "host": stack.emulator.base_url,
        "password": stack.emulator.API_KEY,
        "extra": json.dumps(extra),
    }
    stack.api("POST", "connections", body)
    return stack.api("GET", f"connections/{conn_id}")


@pytest.mark.parametrize(
    ("label", "old", "new", "value"), CREDENTIALS, ids=[c[0].replace(" ", "_") for c in CREDENTIALS]
)
def test_credentials_under_the_current_names_are_masked_by_the_rest_api(
    stack: Stack, label: str, old: str | None, new: str | None, value: str
) -> None:
    slug = label.replace(" ", "_")
    # The emulator's keys are random per run: the table's placeholders name them.
    value = getattr(stack.emulator, value, value)
    routing = {"provider": "openai", "provider_api_key": stack.emulator.PROVIDER_KEY}
    before = create(stack, f"before_{slug}", {**routing, **({old: value} if old else {})})
    after = create(stack, f"after_{slug}", {**routing, **({new: value} if new else {})})
    RESULTS[label] = {
        "before": f"{old or 'password'}: {shown(before, value)}",
        "after": f"{new or 'password'}: {shown(after, value)}",
    }
    assert shown(after, value) == "masked (***)", f"GET returned the {label} in clear: {after}"
    # The UI tests a saved connection by posting back what GET returned (with ***): Airflow
    # puts the stored values back, so the masked connection still works.
    answer = stack.api("POST", "connections/test", {**after, "connection_id": f"after_{slug}"})
    assert answer["status"] is True, answer["message"]
    assert answer["message"].startswith(f"Connected to Portkey at {stack.emulator.base_url}")


def test_report_what_the_rest_api_returned(stack: Stack) -> None:
    """Prints the before/after table (run with -s); runs after the cases above."""
    assert set(RESULTS) == {c[0] for c in CREDENTIALS}
    print("\n| credential | before (old extra name) | after (current extra name) |")
    print("|---|---|---|")
    for label, _, _, _ in CREDENTIALS:
        print(f"| {label} | {RESULTS[label]['before']} | {RESULTS[label]['after']} |")


def test_connection_test_endpoint_answers_quickly_and_names_the_form_connection(
    stack: Stack,
) -> None:
    base = {
        "connection_id": "my_portkey_form",
        "conn_type": "portkey",
        "password": stack.emulator.API_KEY,
        "extra": json.dumps(
            {"provider": "openai", "provider_api_key": stack.emulator.PROVIDER_KEY}
        ),
    }
    good = stack.api("POST", "connections/test", {**base, "host": stack.emulator.base_url})
    assert good["status"] is True

    wrong = stack.api(
        "POST",
        "connections/test",
        {**base, "host": stack.emulator.base_url, "password": "pk-wrong-key-000"},
    )
    assert wrong["status"] is False
    assert wrong["message"].startswith(
        "Portkey connection 'my_portkey_form': Portkey refused the credentials (401"
    )
    assert "pk-wrong-key-000" not in wrong["message"]

    refused_url = stack.refused_url()
    refused = stack.api("POST", "connections/test", {**base, "host": refused_url})
    assert refused["status"] is False
    assert refused["message"].startswith(
        f"Portkey connection 'my_portkey_form': could not connect to {refused_url}"
    )

    accepted_before = len(stack.silent.accepted)
    started = time.monotonic()
    silent = stack.api("POST", "connections/test", {**base, "host": stack.silent.base_url})
    seconds = time.monotonic() - started
    print(f"\nREST Test against a silent host answered in {seconds:.1f} s: {silent['message']}")
    assert silent["status"] is False
    assert silent["message"].startswith(
        f"Portkey connection 'my_portkey_form': no answer from {stack.silent.base_url} within 8 s"
    )
    assert len(stack.silent.accepted) - accepted_before == 1, "one attempt, no retries"
