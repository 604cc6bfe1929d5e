"""Turn an Airflow connection's fields into checked Portkey settings: pure, no I/O.

Every rule about what a connection may hold lives here, so the hook, the trigger and the
connection test refuse the same things with the same words, before any request is sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_portkey._core.defaults import CONN_TYPE
from airflow_portkey._core.errors import PortkeyConfigError

# RFC 9110 token: what a header name may be.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def is_token(name: str) -> bool:
    """Whether ``name`` can be a header name (an HTTP token)."""
    return _TOKEN.fullmatch(name) is not None


# RFC 9110 field value: visible characters and inner spaces, no control characters.
_HEADER_VALUE = re.compile(r"(?:[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?)?")


def _sendable(value: str) -> bool:
    """Whether a field sent in a header as it is holds only visible Latin-1 characters and
    spaces: an invisible or line-separator character (U+200B, U+2028) or a character outside
    Latin-1 failed every request of the sync path as a retried encoding error."""
    if not value.isprintable():
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


# Never the value: the field may be a key.
_UNSENDABLE = (
    "must hold only visible characters (Latin-1) and spaces, as it is sent in an HTTP header; "
    "the value is not shown"
)


def is_header_value(value: str) -> bool:
    """Whether ``value`` can be sent as a header value as it is (HTTP libraries refuse the
    rest, quoting it)."""
    return _HEADER_VALUE.fullmatch(value) is not None


DEFAULT_BASE_URL = "https://api.portkey.ai/v1"
HOSTED_HOSTNAMES = frozenset({"api.portkey.ai"})

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_RETRY_BUDGET = 120.0

# Airflow's REST API and UI redact a connection's extras by key name only: a key is hidden when
# it contains one of Airflow's sensitive words ("secret", "api_key", "token", ...; see
# [core] sensitive_var_conn_names). So every credential extra carries such a word in its name.
# The names first shipped without one are still read (and logged as deprecated).
SECRET_EXTRAS = {
    "virtual_key": "secret_virtual_key",
    "config": "secret_config",
    "headers": "secret_headers",
}
"""Extra name a connection may still use -> the name Airflow redacts, which replaces it."""

# Extras this provider reads; anything else is probably a typo and is logged as such.
KNOWN_EXTRAS = frozenset(
    {
        "api_key",
        "secret_virtual_key",
        "provider",
        "secret_config",
        "provider_api_key",
        "custom_host",
        "request_timeout",
        "connect_timeout",
        "max_retries",
        "retry_budget",
        "max_requests_per_second",
        "verify",
        "secret_headers",
        "metadata",
        "openai_organization",
        "openai_project",
        *SECRET_EXTRAS,
    }
)
_UI_PREFIX = f"extra__{CONN_TYPE}__"


@dataclass(frozen=True, slots=True)
class PortkeySettings:
    """What a hook needs to talk to Portkey; built once per hook from the connection."""

    conn_id: str
    base_url: str
    api_key: str | None = None
    virtual_key: str | None = None
    provider: str | None = None
    config: str | None = None
    provider_api_key: str | None = None
    custom_host: str | None = None
    openai_organization: str | None = None
    openai_project: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_budget: float = DEFAULT_RETRY_BUDGET
    max_requests_per_second: float | None = None
    """Cap on the requests one event loop (a triggerer) or one process (tasks) sends on this
    connection; None: no cap (a 429's Retry-After still holds every request on it)."""
    verify: bool | str = True
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    unknown_extras: tuple[str, ...] = ()
    deprecated_extras: tuple[str, ...] = ()
    """Extras under a name Airflow shows in clear (see :data:`SECRET_EXTRAS`)."""

    def migration_hint(self) -> str | None:
        """What to rename so that Airflow's UI and REST API stop showing these values."""
        if not self.deprecated_extras:
            return None
        renames = ", ".join(f"'{old}' to '{SECRET_EXTRAS[old]}'" for old in self.deprecated_extras)
        return (
            f"Portkey connection {self.conn_id!r} keeps credentials in extras that Airflow's UI "
            f"and REST API show in clear: rename {renames} (edit the extra JSON in Admin > "
            "Connections, or the AIRFLOW_CONN_ variable). The old names still work for now."
        )

    @property
    def is_hosted(self) -> bool:
        return urlsplit(self.base_url).hostname in HOSTED_HOSTNAMES

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never reach a log, an error, an XCom or a rendered template.

        An inline config counts as a whole and for every credential inside it, since a
        provider may echo one of those on its own. Every value of the ``secret_headers``
        extra counts as a secret.
        """
        candidates = [self.api_key, self.virtual_key, self.config, self.provider_api_key]
        # Header values hold credentials too (Bedrock's x-portkey-aws-secret-access-key, ...).
        candidates.extend(self.extra_headers.values())
        if self.config and self.config.startswith("{"):
            candidates.extend(_credentials_in(json.loads(self.config)))
        return tuple(dict.fromkeys(value for value in candidates if value))

    def headers(self) -> dict[str, str]:
        """The headers every request carries (trace headers are added per request)."""
        headers = {"Accept": "application/json"}
        optional = {
            "x-portkey-api-key": self.api_key,
            "x-portkey-virtual-key": self.virtual_key,
            "x-portkey-provider": self.provider,
            "x-portkey-config": self.config,
            "x-portkey-custom-host": self.custom_host,
            "x-portkey-openai-organization": self.openai_organization,
            "x-portkey-openai-project": self.openai_project,
            "Authorization": f"Bearer {self.provider_api_key}" if self.provider_api_key else None,
        }
        headers.update({name: value for name, value in optional.items() if value})
        headers.update(self.extra_headers)
        return headers


_CREDENTIAL_WORDS = ("key", "token", "secret", "password", "credential")

# Config fields that route a request and never hold a credential: their values stay visible
# (a region or a model name masked everywhere would also mangle batch ids and log lines).
_ROUTING_KEYS = frozenset(
    {
        "provider",
        "mode",
        "model",
        "strategy",
        "name",
        "weight",
        "on_status_codes",
        "api_version",
        "aws_region",
        "vertex_region",
        "region",
        "deployment_id",
        "resource_name",
        "cache",
        "retry",
    }
)
# A bare word ("openai", "fallback", "semantic") is a setting, not a credential.
_PLAIN_WORD = re.compile(r"[A-Za-z]{1,12}")


def _credentials_in(value: object, name: str = "") -> list[str]:
    """Every string value of a config object, at any depth, that could be a credential.

    Safe by default: a provider's credential can sit under any name (a service account JSON,
    an ``Authorization`` custom header), so every string counts except the values of known
    routing fields and bare words; under a credential-like name, even those count.
    """
    if isinstance(value, Mapping):
        found = []
        for key, item in value.items():
            found.extend(_credentials_in(item, str(key).lower()))
        return found
    if isinstance(value, list):
        return [text for item in value for text in _credentials_in(item, name)]
    if not isinstance(value, str) or not value:
        return []
    if any(word in name for word in _CREDENTIAL_WORDS):
        return [value]
    if name in _ROUTING_KEYS or _PLAIN_WORD.fullmatch(value):
        return []
    return [value]


def _blank_to_none(value: object) -> object:
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _read_extras(extra: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The extras by their current names, and the deprecated names that held a value
    (current name -> deprecated name).

    Extras saved by the UI carry a ``extra__portkey__`` prefix on some Airflow versions. A
    value under a deprecated name counts when the current name holds none.
    """
    values: dict[str, Any] = {}
    for key, value in extra.items():
        name = key.removeprefix(_UI_PREFIX)
        if _blank_to_none(value) is not None or name not in values:
            values[name] = _blank_to_none(value)
    deprecated = {}
    for old, new in SECRET_EXTRAS.items():
        old_value = values.pop(old, None)
        if old_value is not None:
            deprecated[new] = old
            if values.get(new) is None:
                values[new] = old_value
    return values, deprecated


class _Reader:
    """Reads and checks one connection's fields, naming the connection and field in errors."""

    def __init__(
        self, conn_id: str, extras: Mapping[str, Any], spelled: Mapping[str, str] | None = None
    ) -> None:
        self.conn_id = conn_id
        self.extras = extras
        self.spelled = spelled or {}  # current name -> the deprecated name the user wrote

    def extra(self, name: str) -> str:
        """How errors name an extra: as the user spelled it."""
        return f"extra '{self.spelled.get(name, name)}'"

    def fail(self, field_name: str, problem: str) -> PortkeyConfigError:
        return PortkeyConfigError(
            f"Portkey connection {self.conn_id!r}: {field_name} {problem}. "
            "Fix the connection in Airflow (Admin > Connections) or its AIRFLOW_CONN_ variable."
        )

    def text(self, name: str) -> str | None:
        value = self.extras.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(self.extra(name), f"must be a string, not {type(value).__name__}")
        if any(ch in value for ch in "\r\n\x00"):
            raise self.fail(self.extra(name), "must not contain line breaks")
        value = value.strip()
        if not _sendable(value):
            raise self.fail(self.extra(name), _UNSENDABLE)
        return value

    def number(
        self, name: str, default: float, *, minimum: float, exclusive: bool, integer: bool = False
    ) -> float:
        value = self.extras.get(name)
        if value is None:
            return default
        kind = "a whole number" if integer else "a number"
        try:
            if isinstance(value, bool):
                raise TypeError(value)
            number = float(value)
        except (TypeError, ValueError):
            raise self.fail(self.extra(name), f"must be {kind}, got {value!r}") from None
        if integer and not number.is_integer():
            raise self.fail(self.extra(name), f"must be {kind}, got {value!r}")
        too_small = number <= minimum if exclusive else number < minimum
        if too_small or not math.isfinite(number):
            bound = f"greater than {minimum:g}" if exclusive else f"at least {minimum:g}"
            raise self.fail(self.extra(name), f"must be {bound}, got {value!r}")
        return number

    def flag_or_path(self, name: str) -> bool | str:
        value = self.extras.get(name)
        if value is None:
            return True
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            lowered = value.strip().lower()
            if any(ch in value for ch in "\r\n\x00"):
                raise self.fail(self.extra(name), "must be true, false or a CA bundle path")
            if lowered in {"true", "yes", "1"}:
                return True
            if lowered in {"false", "no", "0"}:
                return False
            return value.strip()
        raise self.fail(self.extra(name), "must be true, false or a CA bundle path")

    def string_map(self, name: str) -> dict[str, str]:
        value = self.extras.get(name)
        if value is None:
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise self.fail(self.extra(name), "must be a JSON object") from None
        if not isinstance(value, Mapping):
            raise self.fail(self.extra(name), "must be a JSON object of strings")
        result: dict[str, str] = {}
        for key, item in value.items():
            text = item if isinstance(item, str) else json.dumps(item)
            if any(ch in f"{key}{text}" for ch in "\r\n\x00"):
                raise self.fail(self.extra(name), f"entry {key!r} must not contain line breaks")
            result[str(key)] = text
        return result

    def header_map(self, name: str) -> dict[str, str]:
        headers = self.string_map(name)
        for key, value in headers.items():
            if not is_token(key):
                raise self.fail(self.extra(name), f"entry {key!r} is not a valid header name")
            if not (is_header_value(value) and _sendable(value)):
                # HTTP libraries refuse such a value quoting it; the value may be a secret.
                raise self.fail(
                    self.extra(name),
                    f"entry {key!r} has a value that starts or ends with a space or holds a "
                    "control, invisible or non-Latin-1 character (a tab, U+2028), which a "
                    "header cannot carry; the value is not shown",
                )
        return headers

    def config(self) -> str | None:
        """A config id (``pc-...``) or a JSON object, sent compact in ``x-portkey-config``."""
        name = "secret_config"
        value = self.extras.get(name)
        if value is None:
            return None
        if isinstance(value, Mapping):
            return json.dumps(value, separators=(",", ":"))
        if not isinstance(value, str):
            raise self.fail(self.extra(name), "must be a config id (pc-...) or a JSON object")
        value = value.strip()
        if value.startswith("{"):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                # The value itself is a secret: say what is wrong, never echo it.
                raise self.fail(self.extra(name), "looks like JSON but does not parse as an object")
            return json.dumps(parsed, separators=(",", ":"))
        if value.startswith("pc-") and value.isprintable() and " " not in value:
            return value
        raise self.fail(
            self.extra(name), "must be a config id starting with 'pc-' or a JSON object"
        )


def _base_url(reader: _Reader, host: str | None, port: int | None, schema: str | None) -> str:
    host = (host or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        # URI-style connections (portkey://...) store the host without a scheme.
        scheme = schema.strip() if schema and schema.strip() in {"http", "https"} else "https"
        host = f"{scheme}://{host}"
    try:
        parts = urlsplit(host)
    except ValueError:  # an unclosed "[", a netloc NFKC turns into "@": never echoed
        raise reader.fail(
            "host (the Base URL field)", f"is not a URL such as {DEFAULT_BASE_URL}"
        ) from None
    if "@" in parts.netloc:
        # Never echoed: what precedes the '@' is a password. Portkey takes keys in headers.
        raise reader.fail(
            "host (the Base URL field)",
            "must not hold a user name or password ('user:password@'); put the Portkey API key "
            "in the Portkey API key field (password) and other credentials in extra "
            "'secret_headers'",
        )
    try:
        parts_port = parts.port
    except ValueError:
        raise reader.fail("host", f"has an invalid port: {host!r}") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
        raise reader.fail("host", f"must be a URL such as {DEFAULT_BASE_URL}, got {host!r}")
    if any(ch.isspace() for ch in host):
        raise reader.fail("host", f"must not contain spaces, got {host!r}")
    netloc = parts.netloc
    if port and parts_port is None:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{netloc}{path}"


def settings_from_connection(
    conn_id: str,
    *,
    host: str | None,
    password: str | None,
    extra: Mapping[str, Any] | None,
    port: int | None = None,
    schema: str | None = None,
) -> PortkeySettings:
    """Check a connection's fields and build settings, or raise PortkeyConfigError."""
    extras, deprecated = _read_extras(extra or {})
    reader = _Reader(conn_id, extras, deprecated)
    base_url = _base_url(reader, host, port, schema)
    api_key = _blank_to_none(password) or reader.text("api_key")
    if api_key is not None and not isinstance(api_key, str):
        raise reader.fail("password", "must be the Portkey API key as text")
    if api_key is not None and any(ch in api_key for ch in "\r\n\x00"):
        raise reader.fail("password", "must not contain line breaks")
    if api_key is not None and not _sendable(api_key.strip()):
        raise reader.fail("password", _UNSENDABLE)
    virtual_key = reader.text("secret_virtual_key")
    provider = reader.text("provider")
    config = reader.config()
    if not (virtual_key or provider or config):
        raise reader.fail(
            "extras",
            "need one of 'provider' (e.g. openai or @openai-prod), 'secret_virtual_key' or "
            "'secret_config' to tell Portkey where to send the batch",
        )
    settings = PortkeySettings(
        conn_id=conn_id,
        base_url=base_url,
        api_key=api_key.strip() if api_key else None,
        virtual_key=virtual_key,
        provider=provider,
        config=config,
        provider_api_key=reader.text("provider_api_key"),
        custom_host=reader.text("custom_host"),
        openai_organization=reader.text("openai_organization"),
        openai_project=reader.text("openai_project"),
        connect_timeout=reader.number(
            "connect_timeout", DEFAULT_CONNECT_TIMEOUT, minimum=0, exclusive=True
        ),
        read_timeout=reader.number(
            "request_timeout", DEFAULT_READ_TIMEOUT, minimum=0, exclusive=True
        ),
        max_retries=int(
            reader.number(
                "max_retries", DEFAULT_MAX_RETRIES, minimum=0, exclusive=False, integer=True
            )
        ),
        retry_budget=reader.number(
            "retry_budget", DEFAULT_RETRY_BUDGET, minimum=0, exclusive=False
        ),
        max_requests_per_second=(
            None
            if reader.extras.get("max_requests_per_second") is None
            else reader.number("max_requests_per_second", 0, minimum=0, exclusive=True)
        ),
        verify=reader.flag_or_path("verify"),
        extra_headers=reader.header_map("secret_headers"),
        metadata=reader.string_map("metadata"),
        unknown_extras=tuple(sorted(set(extras) - KNOWN_EXTRAS)),
        deprecated_extras=tuple(deprecated.values()),
    )
    if settings.is_hosted and not settings.api_key:
        raise reader.fail("password", "is empty: hosted Portkey needs the Portkey API key there")
    return settings
