"""Errors as the real gateway shapes them: its 409 rewrite and its own 400s."""

from __future__ import annotations

import pytest
import requests

from airflow_portkey.batches import BatchStatus
from airflow_portkey.exceptions import PortkeyValidationError
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

from .conftest import PROVIDER_API_KEY

GATEWAY_409 = (
    b'{"error":{"message":"openai error: Cannot cancel a batch with status \'completed\'.",'
    b'"type":"invalid_request_error","param":null,"code":null},"provider":"openai"}'
)
NO_ROUTING = "Either x-portkey-config or x-portkey-provider header is required"
CONFIG_WITHOUT_PROVIDER = (
    "Either x-portkey-provider needs to be passed. Or the x-portkey-config header should have "
    "a valid config with provider details in it."
)


def test_cancel_of_a_completed_batch(
    hook: PortkeyHook, raw: requests.Session, gateway, emulator: PortkeyEmulator
) -> None:
    seeded = emulator.add_batch(status="completed")
    r = raw.post(f"{gateway.base_url}/batches/{seeded['id']}/cancel")
    assert r.status_code == 409
    assert r.content == GATEWAY_409, "the gateway prefixes the message and names the provider"
    emulator.clear_requests()

    batch = hook.cancel_batch(seeded["id"])  # idempotent: no error, the batch as it is
    assert batch.id == seeded["id"]
    assert batch.status is BatchStatus.COMPLETED
    cancel, read = emulator.requests
    assert (cancel.method, cancel.path) == ("POST", f"/v1/batches/{seeded['id']}/cancel")
    assert (read.method, read.path) == ("GET", f"/v1/batches/{seeded['id']}")
    assert emulator.get_batch(seeded["id"])["status"] == "completed"


def test_request_without_provider_gets_the_gateways_400(gateway, emulator: PortkeyEmulator) -> None:
    seeded = emulator.add_batch()
    r = requests.get(
        f"{gateway.base_url}/batches/{seeded['id']}",
        headers={
            "Authorization": f"Bearer {PROVIDER_API_KEY}",
            "x-portkey-custom-host": emulator.base_url,
        },
        timeout=10,
    )
    assert r.status_code == 400
    assert r.json() == {"status": "failure", "message": NO_ROUTING}
    assert not emulator.requests


# The provider's settings refuse a connection with no routing at all before any request, so
# the gateway's 400 is reached with connections that are valid for *hosted* Portkey but that
# the open-source gateway cannot route: a virtual key (a hosted-only concept, not a header the
# gateway reads) or a config that sets no provider.
@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"secret_virtual_key": "vk-hosted-only-1234"}, NO_ROUTING),
        ({"secret_config": {"retry": {"attempts": 1}}}, CONFIG_WITHOUT_PROVIDER),
    ],
    ids=["virtual_key", "config_without_provider"],
)
def test_hook_reports_the_gateways_400(
    make_conn, emulator: PortkeyEmulator, routing: dict, message: str
) -> None:
    seeded = emulator.add_batch()
    conn_id = make_conn("portkey_unroutable", provider=None, **routing)
    hook = PortkeyHook(conn_id)
    try:
        with pytest.raises(PortkeyValidationError) as raised:
            hook.get_batch(seeded["id"])
    finally:
        hook.close()
    error = raised.value
    assert error.status_code == 400
    assert error.portkey_message == message
    assert str(error) == f"Portkey answered 400 on GET /batches/{seeded['id']}: {message}"
    assert "vk-hosted-only-1234" not in str(error)
    assert not emulator.requests, "refused by the gateway, not the provider: 400s are not retried"
