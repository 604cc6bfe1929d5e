"""Batch ids: checked before they go into a path, and never encoded again."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

from airflow_portkey._core.errors import (
    PortkeyInvalidBatchIdError,
)

MAX_BATCH_ID_LENGTH = 512
_UNSAFE_IN_ID = frozenset("/?#\\")
_UNSAFE_ONCE_DECODED = frozenset("?#\\")
_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# An id made only of these passes every check below (no '%', space, control or path
# character): one match instead of a loop over its characters, for thousands of ids.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.~:@!$&'()*+,;=-]+")


def check_batch_id(batch_id: object) -> str:
    """Return the id unchanged, or refuse one that is empty or could reach another path.

    Ids go into the path verbatim: a Bedrock job id is an already URL-encoded ARN that the
    gateway forwards as it is, so encoding it again would break it.
    """
    if (
        type(batch_id) is str
        and len(batch_id) <= MAX_BATCH_ID_LENGTH
        and _PLAIN_ID.fullmatch(batch_id)
        and batch_id not in (".", "..")
    ):
        return batch_id
    if not isinstance(batch_id, str):
        raise PortkeyInvalidBatchIdError(
            f"batch_id must be a string, got {type(batch_id).__name__} {batch_id!r:.80}"
        )
    shown = f"{batch_id!r:.80}"
    if not batch_id.strip():
        raise PortkeyInvalidBatchIdError(f"batch_id is empty or only whitespace: {shown}")
    if len(batch_id) > MAX_BATCH_ID_LENGTH:
        raise PortkeyInvalidBatchIdError(
            f"batch_id is {len(batch_id)} characters long; at most {MAX_BATCH_ID_LENGTH} allowed"
        )
    for char in batch_id:
        if char in _UNSAFE_IN_ID or char.isspace() or unicodedata.category(char)[0] == "C":
            raise PortkeyInvalidBatchIdError(
                f"batch_id {shown} contains {char!r}, which could reach another API path"
            )
    if _PERCENT_ESCAPE.search(batch_id):
        raise PortkeyInvalidBatchIdError(f"batch_id {shown} contains a '%' that is not an escape")
    # A server or proxy that decodes escapes (%2F, %00) before routing would see the decoded
    # id: it must hold no '.'/'..' segment and nothing a plain id may not ('%2F' stays allowed,
    # as in a Bedrock ARN's "model-invocation-job%2Fabc123").
    decoded = unquote(batch_id)
    if any(segment in {".", ".."} for segment in decoded.split("/")):
        raise PortkeyInvalidBatchIdError(
            f"batch_id {shown} is or holds a path segment ('.' or '..') once decoded"
        )
    for char in decoded:
        if char in _UNSAFE_ONCE_DECODED or unicodedata.category(char)[0] == "C":
            raise PortkeyInvalidBatchIdError(
                f"batch_id {shown} holds an escaped {char!r}, which could reach another API path"
            )
    return batch_id


def same_id(answered: str, asked: str) -> bool:
    """Whether an answer's id is the one asked for; a Bedrock ARN may come back escaped as
    it was sent, or unescaped."""
    return answered == asked or unquote(answered) == unquote(asked)
