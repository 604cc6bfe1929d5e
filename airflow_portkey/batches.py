"""Batches as this provider reports them: ``BatchStatus`` (normalised across providers) and
``Batch``. Defined in the pure core (:mod:`airflow_portkey._core.batches`); public here.
"""

from __future__ import annotations

from airflow_portkey._core.batches import (
    DEFAULT_FAILURE_STATUSES,
    DEFAULT_SUCCESS_STATUSES,
    TERMINAL_STATUSES,
    TIMESTAMP_FIELDS,
    Batch,
    BatchStatus,
    RequestCounts,
    check_status_sets,
    is_partial,
    is_terminal,
    normalize_status,
    normalize_timestamp,
    parse_status_set,
)

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "DEFAULT_SUCCESS_STATUSES",
    "TERMINAL_STATUSES",
    "TIMESTAMP_FIELDS",
    "Batch",
    "BatchStatus",
    "RequestCounts",
    "check_status_sets",
    "is_partial",
    "is_terminal",
    "normalize_status",
    "normalize_timestamp",
    "parse_status_set",
]
