"""What both transports share, so that they decide alike: the CA to trust, the proxy to use,
the headers every request carries, the checks on an answer's framing, and how a library's
exception is described in a failure.

Neither path reads the environment on its own (requests runs with ``trust_env=False``,
aiohttp with its default ``trust_env=False``): the environment is read here, once per
transport, by the same rules for both.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from airflow_portkey import __version__
from airflow_portkey._core.errors import PortkeyConfigError
from airflow_portkey._core.settings import PortkeySettings

USER_AGENT = f"airflow-portkey/{__version__}"

# A JSON answer of the batch API is a few KiB (a page of 100 batches, some hundred KiB):
# nothing legitimate comes near this, and nothing beyond it is kept in memory. Downloads
# stream to disk and are not bounded by it.
MAX_ANSWER_BYTES = 32 << 20

# Environment variables naming a CA bundle, in the order they are honoured.
CA_BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def resolve_ca(verify: bool | str) -> str | bool:
    """The CA both paths trust: False (no verification) or a CA file or directory.

    The connection's ``verify`` extra when it names a path (or is false); then the first of
    SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE that is set; then the system's bundle;
    then certifi's.
    """
    if verify is False or isinstance(verify, str):
        return verify
    for name in CA_BUNDLE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return _default_ca()


def check_ca(settings: PortkeySettings) -> None:
    """Refuse, before any request, a ``verify`` extra naming a CA path that does not exist
    (the TLS layer would fail each request with a bare "file not found", which the sync
    path even retries). A check of the file system, so here and not in the pure settings."""
    verify = settings.verify
    tls = settings.base_url.startswith("https:")
    if tls and isinstance(verify, str) and not Path(verify).exists():
        raise PortkeyConfigError(
            f"Portkey connection {settings.conn_id!r}: extra 'verify' names the CA bundle "
            f"{verify!r}, which does not exist. Set it to an existing CA file or directory, "
            "true or false (Admin > Connections or its AIRFLOW_CONN_ variable)."
        )


@functools.cache
def _default_ca() -> str:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.openssl_cafile, paths.openssl_capath):
        if candidate and Path(candidate).exists():
            return candidate
    import certifi

    return str(certifi.where())


@functools.lru_cache(maxsize=16)
def ssl_context(ca: str | bool) -> ssl.SSLContext | bool:
    """One SSL context per CA and process (building one costs milliseconds, which thousands
    of triggers would otherwise each pay); False when verification is off."""
    if ca is False:
        return False
    assert isinstance(ca, str), "resolve_ca() gives a path or False"
    if Path(ca).is_dir():
        return ssl.create_default_context(capath=ca)
    return ssl.create_default_context(cafile=ca)


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (HTTPS_PROXY or HTTP_PROXY by scheme, then
    ALL_PROXY; upper or lower case), or None when there is none or NO_PROXY exempts the host
    (names, their subdomains, ``*``, IP addresses and CIDR ranges, with or without a port)."""
    parts = urlsplit(url)
    proxy = _variable(f"{parts.scheme}_proxy") or _variable("all_proxy")
    if not proxy or _bypassed(parts.hostname or "", parts.port, _variable("no_proxy") or ""):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _variable(name: str) -> str | None:
    """A proxy variable as urllib and requests read it: the lower-case name wins, even set
    empty; else the upper-case one. Two lookups (urllib's own scan of the whole environment
    costs a triggerer most of a millisecond per trigger started)."""
    value = os.environ.get(name)
    if value is None:
        value = os.environ.get(name.upper())
    return value.strip() or None if value is not None else None


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.strip("[]")
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _has_port(entry: str) -> bool:
    if entry.startswith("["):
        return "]:" in entry
    return entry.count(":") == 1


@dataclass(frozen=True, slots=True)
class Connection:
    """What a transport needs to connect, decided once from the settings and the environment.

    Hashable: the async path shares one session among every user of equal values.
    """

    base_url: str
    ca: str | bool
    proxy: str | None
    connect_timeout: float
    total_timeout: float

    @classmethod
    def of(cls, settings: PortkeySettings) -> Connection:
        tls = settings.base_url.startswith("https:")
        check_ca(settings)
        return cls(
            base_url=settings.base_url,
            ca=resolve_ca(settings.verify) if tls else False,
            proxy=proxy_for(settings.base_url),
            connect_timeout=settings.connect_timeout,
            total_timeout=settings.read_timeout,
        )


def request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The hook's headers, plus what every request of this provider carries."""
    return {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate", **headers}


class MalformedAnswer(Exception):
    """An answer that breaks HTTP's framing rules or this provider's size cap."""


def check_framing(headers: Mapping[str, str], limit: int | None) -> None:
    """Refuse an answer whose length cannot be trusted, before reading its body: a
    Content-Length that is not one number, Content-Length beside Transfer-Encoding (a
    request-smuggling shape), or a declared length beyond ``limit``."""
    length = headers.get("content-length")
    if length is None:
        return
    if headers.get("transfer-encoding") is not None:
        raise MalformedAnswer("answer has both Content-Length and Transfer-Encoding")
    text = length.strip()
    if not (text.isascii() and text.isdigit()):
        # Named, not quoted: a hostile server may echo a key there.
        raise MalformedAnswer("answer has an invalid Content-Length (not a decimal number)")
    if limit is not None and int(text) > limit:
        raise MalformedAnswer(too_large(limit))


def too_large(limit: int) -> str:
    return f"answer is larger than {limit} bytes"


_LINE_END = re.compile(r"[\r\n]")


def failure_detail(error: BaseException) -> str:
    """What a transport says of an exception in a TransportFailure: its first line, whole.

    Not cut here: the core redacts the connection's secrets from it, then bounds it
    (``plans.MAX_DETAIL``); cut first, a piece of a secret would survive every redaction."""
    text = str(error).strip()
    # Lines end at CR or LF only: str.splitlines also breaks at NEL, U+2028 and others, which
    # a key may hold, and would cut an echoed key in two (its first piece then unredacted).
    return _LINE_END.split(text, maxsplit=1)[0] if text else type(error).__name__


def exception_chain(error: BaseException) -> list[BaseException]:
    """``error`` and every exception it wraps (args, ``reason``, cause, context), outermost
    first: requests and aiohttp wrap the error that says what happened."""
    seen: set[int] = set()
    found: list[BaseException] = []
    queue: list[object] = [error]
    while queue:
        item = queue.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        found.append(item)
        queue += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return found


def classify(
    error: BaseException, table: tuple[tuple[type[BaseException], str], ...]
) -> tuple[str, str]:
    """The failure kind of ``error`` by a driver's table (the first row whose exception is
    anywhere in the chain), and the detail of the exception that matched."""
    chain = exception_chain(error)
    for exception_type, kind in table:
        for item in chain:
            if isinstance(item, exception_type):
                return kind, failure_detail(item if kind in {"tls", "malformed"} else error)
    return "dropped", failure_detail(error)
