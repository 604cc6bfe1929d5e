"""What Airflow's providers manager reads (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_portkey import __version__


def _text(
    label: str, description: str, *, secret: bool = False, examples: list[str] | None = None
) -> dict[str, Any]:
    field_schema: dict[str, Any] = {"type": ["string", "null"]}
    if secret:
        field_schema["format"] = "password"  # a masked input; Airflow redacts by name only
    if examples:
        field_schema["examples"] = examples  # the UI offers them as suggestions
    return {"label": label, "description": description, "schema": field_schema}


def _number(
    label: str,
    description: str,
    default: float,
    *,
    kind: str = "number",
    above_zero: bool = False,
) -> dict[str, Any]:
    """A number field with the bounds ``_core.settings`` enforces (0 itself refused or not)."""
    bound = {"exclusiveMinimum": 0} if above_zero else {"minimum": 0}
    return {
        "label": label,
        "description": description,
        "schema": {"type": [kind, "null"], "default": default, **bound},
    }


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-portkey",
        "name": "Portkey",
        "description": (
            "Create Portkey batches, wait for them, fetch their results and cancel them "
            "from Airflow DAGs."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Portkey",
                "external-doc-url": "https://portkey.ai/docs/api-reference/inference-api/batch/cancel-batch",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {"integration-name": "Portkey", "python-modules": ["airflow_portkey.hooks.portkey"]}
        ],
        "operators": [
            {"integration-name": "Portkey", "python-modules": ["airflow_portkey.operators.batch"]}
        ],
        "sensors": [
            {"integration-name": "Portkey", "python-modules": ["airflow_portkey.sensors.batch"]}
        ],
        "triggers": [
            {"integration-name": "Portkey", "python-modules": ["airflow_portkey.triggers.batch"]}
        ],
        "extra-links": ["airflow_portkey.links.PortkeyLogsLink"],
        "notifications": ["airflow_portkey.notifications.cancel.PortkeyCancelBatchesNotifier"],
        "connection-types": [
            {
                "hook-class-name": "airflow_portkey.hooks.portkey.PortkeyHook",
                "hook-name": "Portkey",
                "connection-type": "portkey",
                # Airflow's UI and REST API redact an extra only when its name contains one of
                # Airflow's sensitive words: every credential's name here has one ("secret",
                # "api_key"); see SECRET_EXTRAS in _core/settings.py.
                "conn-fields": {
                    "provider": _text(
                        "Provider",
                        "Where Portkey sends requests: a provider name (openai, azure-openai, "
                        "bedrock, vertex-ai, ...) or, on hosted Portkey, a model catalog slug "
                        "such as @openai-prod. Fill in this, a virtual key or a config.",
                        examples=["openai", "@openai-prod", "azure-openai", "bedrock"],
                    ),
                    "secret_virtual_key": _text(
                        "Virtual key",
                        "A Portkey virtual key (hosted Portkey, legacy): routes to the provider "
                        "and key saved under it. Masked once saved.",
                        secret=True,
                    ),
                    "secret_config": _text(
                        "Config",
                        "A saved Portkey config id (pc-...) or a config as a JSON object. "
                        "Masked once saved, since a config may hold keys.",
                        secret=True,
                    ),
                    "provider_api_key": _text(
                        "Provider API key",
                        "The provider's own key (e.g. OpenAI sk-...), sent as "
                        "Authorization: Bearer when routing by provider name. Masked once saved.",
                        secret=True,
                    ),
                    "custom_host": _text(
                        "Custom host",
                        "Optional: the provider's base URL when it is not the provider's "
                        "default (a proxy or a self-hosted model), sent as x-portkey-custom-host.",
                    ),
                    "openai_organization": _text(
                        "OpenAI organization", "Optional: forwarded to OpenAI (org-...)."
                    ),
                    "openai_project": _text(
                        "OpenAI project", "Optional: forwarded to OpenAI (proj_...)."
                    ),
                    "request_timeout": _number(
                        "Read timeout (s)",
                        "Seconds to wait for an answer to one request; more than 0. Default 60.",
                        60,
                        above_zero=True,
                    ),
                    "connect_timeout": _number(
                        "Connect timeout (s)",
                        "Seconds to wait for a connection to open; more than 0. Default 10.",
                        10,
                        above_zero=True,
                    ),
                    "max_retries": _number(
                        "Max retries",
                        "How many times to retry a call after a 408, 429, 5xx or network "
                        "error; 0 turns retries off. Default 5.",
                        5,
                        kind="integer",
                    ),
                    "retry_budget": _number(
                        "Retry budget (s)",
                        "Total seconds one call may spend retrying; 0 or more. Default 120.",
                        120,
                    ),
                    "verify": _text(
                        "Verify TLS",
                        "true (default) to check the server's certificate against the system's "
                        "CA bundle, false to skip the check (not for production), or the path "
                        "of a CA bundle file on the Airflow machines.",
                        examples=["true", "false", "/etc/ssl/certs/ca-certificates.crt"],
                    ),
                    "secret_headers": _text(
                        "Extra headers",
                        "A JSON object of headers sent with every request, e.g. Bedrock's "
                        '{"x-portkey-aws-secret-access-key": "..."}. Values are treated as '
                        "secrets and masked once saved.",
                        secret=True,
                    ),
                    "metadata": _text(
                        "Metadata",
                        'A JSON object of strings added to x-portkey-metadata, e.g. {"team": '
                        '"ml"}, to filter Portkey\'s logs by. Not secret.',
                    ),
                    "max_requests_per_second": {
                        "label": "Max requests per second",
                        "description": (
                            "Optional cap on the requests each triggerer (and each task "
                            "process) sends on this connection; more than 0, empty for no cap. "
                            "Keep it under your Portkey plan's limit divided by the number of "
                            "triggerers."
                        ),
                        "schema": {
                            "type": ["number", "null"],
                            "default": None,
                            "exclusiveMinimum": 0,
                        },
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "Base URL", "password": "Portkey API key"},
                    "placeholders": {
                        "host": "https://api.portkey.ai/v1 (or http://localhost:8787/v1 for a "
                        "self-hosted gateway)",
                        "password": "pk-... (needed by hosted Portkey; a self-hosted gateway "
                        "ignores it)",
                    },
                },
            }
        ],
    }
