"""Batch statuses and the batch model: pure, no I/O, shared by every path.

Providers behind Portkey report a batch's state in their own words (Bedrock's ``stopping``,
Cohere's ``complete``, PascalCase in some list results). Every caller asks this module what a
word means, so there is one table of statuses in the whole package.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# pendulum: Airflow's own date library, pure arithmetic here (UTC only, no clock reads, no
# time-zone files); tests/core/test_core_is_pure.py allows it by name.
import pendulum


class BatchStatus(str, Enum):
    """A batch status in OpenAI's words, which Portkey documents."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
"""A batch in one of these will not change again. ``cancelling`` is not one: OpenAI keeps a
batch there for minutes, still running and billing."""

DEFAULT_SUCCESS_STATUSES: frozenset[BatchStatus] = frozenset({BatchStatus.COMPLETED})
DEFAULT_FAILURE_STATUSES: frozenset[BatchStatus] = TERMINAL_STATUSES - DEFAULT_SUCCESS_STATUSES

# Provider words (already folded by _fold) -> the documented status.
_ALIASES: dict[str, BatchStatus] = {
    "validating": BatchStatus.VALIDATING,
    "pending": BatchStatus.VALIDATING,
    "queued": BatchStatus.VALIDATING,
    "created": BatchStatus.VALIDATING,
    "in_progress": BatchStatus.IN_PROGRESS,
    "submitted": BatchStatus.IN_PROGRESS,
    "scheduled": BatchStatus.IN_PROGRESS,
    "processing": BatchStatus.IN_PROGRESS,
    "running": BatchStatus.IN_PROGRESS,
    "finalizing": BatchStatus.FINALIZING,
    "finalising": BatchStatus.FINALIZING,
    "completed": BatchStatus.COMPLETED,
    "complete": BatchStatus.COMPLETED,
    "succeeded": BatchStatus.COMPLETED,
    "partially_completed": BatchStatus.COMPLETED,
    "partially_succeeded": BatchStatus.COMPLETED,
    "failed": BatchStatus.FAILED,
    "file_upload_failed": BatchStatus.FAILED,
    "batch_start_failed": BatchStatus.FAILED,
    "expired": BatchStatus.EXPIRED,
    "cancelling": BatchStatus.CANCELLING,
    "canceling": BatchStatus.CANCELLING,
    "stopping": BatchStatus.CANCELLING,
    "cancelled": BatchStatus.CANCELLED,
    "canceled": BatchStatus.CANCELLED,
    "stopped": BatchStatus.CANCELLED,
}

# Words that end a batch as "completed" although part of it did not run.
_PARTIAL_WORDS = frozenset({"partially_completed", "partially_succeeded"})

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=256)  # a handful of words, read on every poll
def _fold(raw: str) -> str:
    """``InProgress``, ``in-progress``, ``JOB_STATE_RUNNING`` -> ``in_progress``/``running``."""
    word = _CAMEL_BOUNDARY.sub("_", raw.strip()).lower().replace("-", "_").replace(" ", "_")
    return word.removeprefix("job_state_")


def normalize_status(raw: object) -> BatchStatus:
    """Map any provider's status word to a :class:`BatchStatus`; unknown words give UNKNOWN."""
    if isinstance(raw, BatchStatus):
        return raw
    if not isinstance(raw, str):
        return BatchStatus.UNKNOWN
    return _ALIASES.get(_fold(raw), BatchStatus.UNKNOWN)


@functools.lru_cache(maxsize=256)  # a handful of words, read on every poll
def _status_of(raw: str) -> tuple[BatchStatus, bool]:
    """:func:`normalize_status` and :func:`is_partial` of one word, at once."""
    word = _fold(raw)
    return _ALIASES.get(word, BatchStatus.UNKNOWN), word in _PARTIAL_WORDS


def is_partial(raw: object) -> bool:
    """True for words that mean "completed, but only in part" (Bedrock's partially_completed)."""
    return isinstance(raw, str) and _fold(raw) in _PARTIAL_WORDS


def is_terminal(status: BatchStatus) -> bool:
    return status in TERMINAL_STATUSES


def parse_status_set(values: Iterable[str | BatchStatus], *, name: str) -> frozenset[BatchStatus]:
    """Read a user's set of statuses, refusing words that mean nothing or are not terminal."""
    if isinstance(values, str | BatchStatus):
        values = [values]
    statuses: set[BatchStatus] = set()
    for value in values:
        status = normalize_status(value)
        if status is BatchStatus.UNKNOWN:
            known = ", ".join(sorted(s.value for s in TERMINAL_STATUSES))
            raise ValueError(f"{name}: unknown batch status {value!r}; use one of {known}")
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{name}: {value!r} is not a terminal batch status")
        statuses.add(status)
    return frozenset(statuses)


def check_status_sets(success: frozenset[BatchStatus], failure: frozenset[BatchStatus]) -> None:
    """Refuse a wait that could never succeed, or whose outcome would be ambiguous."""
    if not success:
        raise ValueError("success_statuses must name at least one terminal status")
    overlap = success & failure
    if overlap:
        words = ", ".join(sorted(status.value for status in overlap))
        raise ValueError(f"success_statuses and failure_statuses overlap on: {words}")


# Providers such as Bedrock, Vertex and Cohere report milliseconds where OpenAI reports seconds.
# 10**11 seconds is the year 5138, so anything above it must be milliseconds.
_MILLISECONDS_THRESHOLD = 10**11

TIMESTAMP_FIELDS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


# The last second of year 9999, in milliseconds: the latest moment a datetime can hold.
_LATEST_MILLISECONDS = 253_402_300_799_000


def normalize_timestamp(value: object) -> float | None:
    """Unix seconds from seconds or milliseconds; None for anything that is not a number or
    not a moment between 1970 and the year 9999 (negative, infinite, NaN, 10**30)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not 0 <= value <= _LATEST_MILLISECONDS:  # also False for NaN
        return None
    return value / 1000 if value > _MILLISECONDS_THRESHOLD else float(value)


# More requests than any batch holds (OpenAI's limit is 50,000): a count beyond it is noise.
_MAX_COUNT = 10**12


@dataclass(frozen=True, slots=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0

    @classmethod
    def from_raw(cls, raw: object) -> RequestCounts:
        if type(raw) is not dict and not isinstance(raw, Mapping):
            return cls()
        get = raw.get
        total, completed, failed = get("total"), get("completed"), get("failed")
        # A count is a plausible int, else 0 (not reported).
        total = total if type(total) is int and 0 <= total <= _MAX_COUNT else 0
        completed = completed if type(completed) is int and 0 <= completed <= _MAX_COUNT else 0
        failed = failed if type(failed) is int and 0 <= failed <= _MAX_COUNT else 0
        if cls is not RequestCounts:  # a subclass, through its own __init__
            return cls(total, completed, failed)
        counts = _new(RequestCounts)  # see _slot_setters
        _set_total(counts, total)
        _set_completed(counts, completed)
        _set_failed(counts, failed)
        return counts

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def percent(self) -> float | None:
        return None if self.total <= 0 else round(100 * self.done / self.total, 1)

    def describe(self) -> str:
        if self.total <= 0 and self.done == 0:
            return "no request counts reported yet"
        percent = "?" if self.percent is None else f"{self.percent:g}%"
        return (
            f"{self.done}/{self.total} requests done ({percent}): "
            f"{self.completed} completed, {self.failed} failed"
        )


_NO_COUNTS = RequestCounts()


def _slot_setters(cls: type, *names: str) -> tuple[Callable[[object, object], None], ...]:
    """The setters of a frozen dataclass's slots, one per field in order (all of them).

    ``from_raw`` runs on every poll of every wait and fills its new object through them: a
    frozen dataclass's own ``__init__`` calls ``object.__setattr__`` per field, twice the cost.
    """
    fields = tuple(f.name for f in dataclasses.fields(cls))
    if fields != names:
        raise AssertionError(f"{cls.__name__} has the fields {fields}, not {names}")
    return tuple(getattr(cls, name).__set__ for name in names)


_new = object.__new__
_set_total, _set_completed, _set_failed = _slot_setters(
    RequestCounts, "total", "completed", "failed"
)


def _error_messages(raw: object) -> tuple[str, ...]:
    """Messages from OpenAI's ``errors: {data: [{code, message, line}]}`` (or a bare list)."""
    items = raw.get("data") if isinstance(raw, Mapping) else raw
    if not isinstance(items, list):
        return ()
    messages = []
    for item in items:
        if isinstance(item, Mapping):
            text = str(item.get("message") or item.get("code") or "error")
            line = item.get("line")
            messages.append(f"line {line}: {text}" if line is not None else text)
        elif isinstance(item, str):
            messages.append(item)
    return tuple(messages)


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch as Portkey returned it, with its status normalised and the raw answer kept."""

    id: str
    status: BatchStatus
    raw_status: str | None
    request_counts: RequestCounts = field(default_factory=RequestCounts)
    partial: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[str, ...] = ()
    timestamps: Mapping[str, float] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], *, copy: bool = True) -> Batch:
        """Build from Portkey's batch object; the caller has checked it has an ``id``.

        Runs once per poll of every waiting batch: fields that are absent or null (most
        timestamps, errors) cost one lookup each. ``copy=False`` keeps ``raw`` itself as
        :attr:`raw` (a dict just parsed from an answer, that nothing else holds).
        """
        get = raw.get
        raw_status = get("status")
        if type(raw_status) is str:
            status, partial = _status_of(raw_status)
        else:
            status, partial = normalize_status(raw_status), is_partial(raw_status)
        timestamps = {}
        for name in TIMESTAMP_FIELDS:
            value = get(name)
            if value is None:
                continue
            if type(value) is int and 0 <= value <= _MILLISECONDS_THRESHOLD:
                timestamps[name] = float(value)  # seconds, as nearly every provider reports
            elif (seconds := normalize_timestamp(value)) is not None:
                timestamps[name] = seconds
        errors = get("errors")
        counts = get("request_counts")
        # A file id is a non-empty string, else not reported.
        output_file_id = get("output_file_id")
        error_file_id = get("error_file_id")
        batch_id = str(raw["id"])
        raw_word = raw_status if isinstance(raw_status, str) else None
        request_counts = RequestCounts.from_raw(counts) if counts else _NO_COUNTS
        output_file_id = output_file_id if type(output_file_id) is str and output_file_id else None
        error_file_id = error_file_id if type(error_file_id) is str and error_file_id else None
        messages = _error_messages(errors) if errors else ()
        kept = raw if not copy and type(raw) is dict else dict(raw)
        if cls is not Batch:  # a subclass, through its own __init__
            return cls(
                batch_id,
                status,
                raw_word,
                request_counts,
                partial,
                output_file_id,
                error_file_id,
                messages,
                timestamps,
                kept,
            )
        batch = _new(Batch)  # see _slot_setters
        _set_id(batch, batch_id)
        _set_status(batch, status)
        _set_raw_status(batch, raw_word)
        _set_request_counts(batch, request_counts)
        _set_partial(batch, partial)
        _set_output_file_id(batch, output_file_id)
        _set_error_file_id(batch, error_file_id)
        _set_errors(batch, messages)
        _set_timestamps(batch, timestamps)
        _set_raw(batch, kept)
        return batch

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def datetimes(self) -> dict[str, pendulum.DateTime]:
        """The batch's own timestamps (``created_at``, ``in_progress_at``...) as aware UTC
        datetimes; a field the provider did not report is absent."""
        return {name: pendulum.from_timestamp(seconds) for name, seconds in self.timestamps.items()}

    @property
    def created_at(self) -> pendulum.DateTime | None:
        return self.datetimes.get("created_at")

    def to_xcom(self) -> dict[str, Any]:
        """A JSON-serialisable summary for XCom and trigger events (no credentials in it)."""
        return {
            "id": self.id,
            "status": self.status._value_,  # .value, without the enum's property: per batch
            "raw_status": self.raw_status,
            "partial": self.partial,
            "request_counts": {
                "total": self.request_counts.total,
                "completed": self.request_counts.completed,
                "failed": self.request_counts.failed,
            },
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "errors": list(self.errors),
            "raw": dict(self.raw),
        }

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> Batch:
        """Rebuild from :meth:`to_xcom` output (a trigger event, an XCom)."""
        return cls.from_raw(value["raw"]) if value.get("raw") else cls.from_raw(value)

    def status_word(self) -> str:
        """The status, with the provider's own word when it differs."""
        word = self.status.value
        if self.raw_status and _fold(self.raw_status) != word:
            word = f"{word} (provider said {self.raw_status!r})"
        if self.partial:
            word += ", only partly"
        return word

    def describe(self) -> str:
        return f"batch {self.id} is {self.status_word()}; {self.request_counts.describe()}"

    def describe_cancel(self) -> str:
        """The one line a cancel of this batch logs: requested, or nothing left to cancel."""
        if self.is_terminal and self.status is not BatchStatus.CANCELLED:
            return f"Batch {self.id} was already {self.status_word()}; left alone"
        return f"Cancel requested: {self.describe()}"


(
    _set_id,
    _set_status,
    _set_raw_status,
    _set_request_counts,
    _set_partial,
    _set_output_file_id,
    _set_error_file_id,
    _set_errors,
    _set_timestamps,
    _set_raw,
) = _slot_setters(
    Batch,
    "id",
    "status",
    "raw_status",
    "request_counts",
    "partial",
    "output_file_id",
    "error_file_id",
    "errors",
    "timestamps",
    "raw",
)
