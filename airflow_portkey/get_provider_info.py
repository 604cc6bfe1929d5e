"""What Airflow's providers manager reads (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_portkey import __version__


def _text(label: str, description: str, *, secret: bool = False, **schema: Any) -> dict[str, Any]:
    field_schema: dict[str, Any] = {"type": ["string", "null"], **schema}
    if secret:
        field_schema["format"] = "password"
    return {"label": label, "description": description, "schema": field_schema}


def _number(label: str, description: str, default: float, kind: str = "number") -> dict[str, Any]:
    return {
        "label": label,
        "description": description,
        "schema": {"type": [kind, "null"], "default": default, "minimum": 0},
    }


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-portkey",
        "name": "Portkey",
        "description": "Cancel Portkey batches and wait for them from Airflow DAGs.",
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
        "notifications": ["airflow_portkey.notifications.cancel.PortkeyCancelBatchesNotifier"],
        "connection-types": [
            {
                "hook-class-name": "airflow_portkey.hooks.portkey.PortkeyHook",
                "hook-name": "Portkey",
                "connection-type": "portkey",
                "conn-fields": {
                    "provider": _text(
                        "Provider",
                        "Provider name (openai, bedrock, ...) or a model catalog slug "
                        "(@openai-prod)",
                    ),
                    "virtual_key": _text("Virtual key", "Legacy Portkey virtual key", secret=True),
                    "config": _text(
                        "Config", "Portkey config id (pc-...) or config JSON", secret=True
                    ),
                    "provider_api_key": _text(
                        "Provider API key",
                        "Sent as Authorization: Bearer when routing by provider name",
                        secret=True,
                    ),
                    "custom_host": _text("Custom host", "Upstream base URL for the provider"),
                    "openai_organization": _text("OpenAI organization", "Optional"),
                    "openai_project": _text("OpenAI project", "Optional"),
                    "request_timeout": _number(
                        "Read timeout (s)", "Seconds to wait for an answer", 60
                    ),
                    "connect_timeout": _number(
                        "Connect timeout (s)", "Seconds to wait for a connection", 10
                    ),
                    "max_retries": _number(
                        "Max retries", "Retries of 408, 429, 5xx and network errors", 5, "integer"
                    ),
                    "retry_budget": _number(
                        "Retry budget (s)", "Total seconds one call may spend retrying", 120
                    ),
                    "verify": {
                        "label": "Verify TLS",
                        "description": "Verify the server's TLS certificate",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "headers": _text("Extra headers", "JSON object of headers to send"),
                    "metadata": _text("Metadata", "JSON object sent in x-portkey-metadata"),
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "Base URL", "password": "Portkey API key"},
                    "placeholders": {
                        "host": "https://api.portkey.ai/v1",
                        "password": "Portkey API key (optional for a self-hosted gateway)",
                    },
                },
            }
        ],
    }
