"""Header checks: hosted Portkey's, or an OpenAI-compatible provider's behind the gateway."""

from __future__ import annotations

import json

from ._responses import Response, gateway_failure, json_response, openai_error

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def _bearer(headers: dict[str, str]) -> str:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _check_bearer(
    headers: dict[str, str], expected: str | None, provider: str | None
) -> Response | None:
    token = _bearer(headers)
    if not token:
        return openai_error(401, _NO_KEY, provider=provider)
    if expected is not None and token != expected:
        return openai_error(
            401, "Incorrect API key provided", provider=provider, code="invalid_api_key"
        )
    return None


def _valid_config(value: str) -> bool:
    if value.startswith("pc-"):
        return True
    try:
        return isinstance(json.loads(value), dict)
    except ValueError:
        return False


def check_hosted(
    headers: dict[str, str], api_key: str | None, provider_api_key: str | None
) -> Response | None:
    """None when hosted Portkey would accept these headers, else its refusal."""
    given = headers.get("x-portkey-api-key", "").strip()
    if not given:
        return json_response(401, {"status": "failure", "message": "Portkey API Key Not Found"})
    if api_key is not None and given != api_key:
        return json_response(401, {"status": "failure", "message": "Invalid API Key"})
    config = headers.get("x-portkey-config", "").strip()
    virtual_key = headers.get("x-portkey-virtual-key", "").strip()
    provider = headers.get("x-portkey-provider", "").strip()
    if config and not _valid_config(config):
        return gateway_failure(400, "Invalid config passed")
    if not (config or virtual_key or provider):
        return gateway_failure(
            400, "Either x-portkey-config or x-portkey-provider header is required"
        )
    if provider and not provider.startswith("@") and not (virtual_key or config):
        # A bare provider name means the caller brings the provider's own credential.
        return _check_bearer(headers, provider_api_key, provider)
    return None


def check_upstream(headers: dict[str, str], provider_api_key: str | None) -> Response | None:
    """None when an OpenAI-compatible provider would accept the Authorization header."""
    return _check_bearer(headers, provider_api_key, None)


def plain_provider(headers: dict[str, str]) -> str | None:
    """The x-portkey-provider header when it names a provider (not an @slug)."""
    provider = headers.get("x-portkey-provider", "").strip()
    return provider if provider and not provider.startswith("@") else None
