"""One batch, modelled as a timeline of statuses that is read lazily against the emulator clock.

Nothing ticks: a batch stores when it enters each status, and every read works out where the
clock stands on that timeline. Thousands of pollers then cost a few comparisons each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

TERMINAL = frozenset(
    {"completed", "failed", "expired", "cancelled", "file_upload_failed", "batch_start_failed"}
)
FLAVOURS = ("openai", "bedrock", "cohere", "vertex")
OUTCOMES = ("completed", "failed", "expired")
DURATION_KEYS = ("validating", "in_progress", "finalizing", "cancelling")
PROVIDER_OF_FLAVOUR = {
    "openai": "openai",
    "bedrock": "bedrock",
    "cohere": "cohere",
    "vertex": "vertex-ai",
}
DAY_S = 86400.0

# How a batch travels to each outcome: OpenAI fails batches while validating their input and
# expires them while they are still in progress.
_PATHS: dict[str, tuple[str, ...]] = {
    "completed": ("validating", "in_progress", "finalizing", "completed"),
    "failed": ("validating", "failed"),
    "expired": ("validating", "in_progress", "expired"),
}
# Made-up past for a batch seeded straight into a status that its outcome's path lacks.
_SEED_PATHS: dict[str, tuple[str, ...]] = {
    **_PATHS,
    "finalizing": ("validating", "in_progress", "finalizing"),
    "in_progress": ("validating", "in_progress"),
    "validating": ("validating",),
    "cancelling": ("validating", "in_progress", "cancelling"),
    "cancelled": ("validating", "in_progress", "cancelling", "cancelled"),
}
_STAMPS = (
    ("in_progress", "in_progress_at"),
    ("finalizing", "finalizing_at"),
    ("completed", "completed_at"),
    ("failed", "failed_at"),
    ("expired", "expired_at"),
    ("cancelling", "cancelling_at"),
    ("cancelled", "cancelled_at"),
)
_BEDROCK_WORDS = {
    "finalizing": "in_progress",  # Bedrock has no finalizing step
    "cancelling": "stopping",
    "cancelled": "stopped",
}
_COHERE_WORDS = {"in_progress": "processing", "finalizing": "processing", "completed": "complete"}
_BEDROCK_ARN = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2F"


def new_batch_id(flavour: str) -> str:
    """A fresh id shaped like the provider's own."""
    if flavour == "bedrock":
        return _BEDROCK_ARN + os.urandom(6).hex()
    if flavour == "cohere":
        h = os.urandom(16).hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    if flavour == "vertex":
        return str(int.from_bytes(os.urandom(8), "big") % 10**19)
    return "batch_" + os.urandom(16).hex()


def new_file_id() -> str:
    """A fresh OpenAI-style file id."""
    return "file-" + os.urandom(12).hex()


def _pascal(word: str) -> str:
    return "".join(part.capitalize() for part in word.split("_"))


class Batch:
    """A batch and its timeline; all methods take the emulator time `now` (Unix seconds)."""

    __slots__ = (
        "completion_window",
        "durations",
        "endpoint",
        "errors",
        "flavour",
        "id",
        "input_file_id",
        "metadata",
        "outcome",
        "output_file_id",
        "output_lines",
        "raw_status",
        "request_counts",
        "timeline",
        "total",
    )

    def __init__(
        self,
        *,
        id: str,
        flavour: str,
        status: str,
        now: float,
        hold: bool,
        outcome: str,
        durations: Mapping[str, float],
        total: int,
        raw_status: str | None = None,
        request_counts: Mapping[str, int] | None = None,
        errors: Any = None,
        metadata: Mapping[str, str] | None = None,
        output_lines: Sequence[Any] | None = None,
        endpoint: str = "/v1/chat/completions",
        input_file_id: str | None = None,
        completion_window: str = "24h",
    ) -> None:
        self.id = id
        self.flavour = flavour
        self.outcome = outcome
        self.durations = dict(durations)
        self.total = total
        self.errors = errors
        self.metadata = dict(metadata) if metadata is not None else None
        self.output_lines = list(output_lines) if output_lines is not None else None
        self.endpoint = endpoint
        self.input_file_id = input_file_id or new_file_id()
        self.completion_window = completion_window
        self.output_file_id = new_file_id()  # reserved now, shown once there is output
        self.raw_status: tuple[str, str] | None = None
        self.request_counts: dict[str, int] | None = None
        self.timeline: list[tuple[str, float]] = self._seed(status, now)
        if not hold:
            self.timeline += self._plan(status, now)
        self._set_overrides(status, raw_status, request_counts)

    # -- timeline -------------------------------------------------------------------------

    def _duration(self, status: str) -> float:
        return self.durations.get(status, self.durations["in_progress"])

    def _seed(self, status: str, now: float) -> list[tuple[str, float]]:
        """Entries up to `status` entered at `now`, with a past laid out backwards."""
        path = _PATHS[self.outcome]
        if status in path:
            seq = path[: path.index(status) + 1]
        else:
            seq = _SEED_PATHS.get(status, ("validating", status))
        entries = [(seq[-1], now)]
        t = now
        for prev in reversed(seq[:-1]):
            t -= self._duration(prev)
            entries.append((prev, t))
        entries.reverse()
        return entries

    def _plan(self, status: str, now: float) -> list[tuple[str, float]]:
        """Future entries after `status`, entered at `now`, when the batch is not held."""
        if status in TERMINAL:
            return []
        if status == "cancelling":
            return [("cancelled", now + self.durations["cancelling"])]
        path = _PATHS[self.outcome]
        rest = path[path.index(status) + 1 :] if status in path else (self.outcome,)
        plan = []
        t = now + self._duration(status)
        for nxt in rest:
            plan.append((nxt, t))
            t += self._duration(nxt)
        return plan

    def _set_overrides(
        self, status: str, raw_status: str | None, request_counts: Mapping[str, int] | None
    ) -> None:
        # A raw word belongs to the status it was given with, so a moving batch drops it.
        self.raw_status = (status, raw_status) if raw_status is not None else None
        if request_counts is not None:
            counts = {"total": self.total, "completed": 0, "failed": 0}
            counts.update({k: int(v) for k, v in request_counts.items()})
            self.request_counts = counts
        else:
            self.request_counts = None

    def _current(self, now: float) -> int:
        """Index of the timeline entry in force at `now`."""
        idx = 0
        for i, (_, t) in enumerate(self.timeline):
            if t <= now:
                idx = i
            else:
                break
        return idx

    def status_at(self, now: float) -> str:
        """The normalised (OpenAI) status at `now`."""
        return self.timeline[self._current(now)][0]

    def _past(self, now: float) -> list[tuple[str, float]]:
        return self.timeline[: self._current(now) + 1]

    # -- changes --------------------------------------------------------------------------

    def cancel(self, now: float) -> str:
        """Cancel: returns "ok", "unchanged" (already cancelling) or "terminal"."""
        status = self.status_at(now)
        if status == "cancelling":
            return "unchanged"
        if status in TERMINAL:
            return "terminal"
        self.timeline = [
            *self._past(now),
            ("cancelling", now),
            ("cancelled", now + self.durations["cancelling"]),
        ]
        return "ok"

    def force(
        self,
        now: float,
        status: str,
        *,
        raw_status: str | None = None,
        request_counts: Mapping[str, int] | None = None,
        hold: bool = True,
    ) -> None:
        """Put the batch into `status` now; with hold=False it moves on from there."""
        self.timeline = [*self._past(now), (status, now)]
        if not hold:
            self.timeline += self._plan(status, now)
        self._set_overrides(status, raw_status, request_counts)

    # -- reading --------------------------------------------------------------------------

    def counts_at(self, now: float) -> dict[str, int]:
        """request_counts: `completed` grows while in progress and freezes when it ends
        (a cancelled batch's counts stay where they were when the cancel came)."""
        if self.request_counts is not None:
            return dict(self.request_counts)
        past = self._past(now)
        completed = 0
        for i, (status, start) in enumerate(past):
            if status != "in_progress":
                continue
            nxt = past[i + 1][0] if i + 1 < len(past) else None
            if nxt in ("finalizing", "completed"):
                completed = self.total
            else:
                end = past[i + 1][1] if nxt is not None else now
                # An expiring batch gets through about half of its requests.
                span = self.durations["in_progress"] * (2 if self.outcome == "expired" else 1)
                frac = 1.0 if span <= 0 else min(1.0, max(0.0, (end - start) / span))
                # The last request finishes as the batch moves on to finalizing, as OpenAI's
                # do: a batch held in progress, cancelled or expired never shows all done.
                completed = min(int(self.total * frac), max(0, self.total - 1))
            break
        else:
            if past[-1][0] == "completed":
                completed = self.total
        return {"total": self.total, "completed": completed, "failed": 0}

    def status_since(self, now: float) -> float:
        """When the batch entered the status it has at `now` (for a finished batch: when it
        finished, the same on every later read)."""
        return self.timeline[self._current(now)][1]

    def has_output(self, now: float) -> bool:
        """Whether the output endpoint answers with lines."""
        if self.output_lines is not None:
            return True
        return self.output_file_id_at(now) is not None

    def output_file_id_at(self, now: float) -> str | None:
        """output_file_id as shown at `now` (partial output for expired/cancelled batches)."""
        status = self.status_at(now)
        if status == "completed":
            return self.output_file_id
        if status in ("expired", "cancelled") and self.counts_at(now)["completed"] > 0:
            return self.output_file_id
        return None

    def _word(self, status: str, idx: int, now: float, counts: dict[str, int]) -> str:
        if self.flavour == "bedrock":
            if status == "validating":
                # Bedrock passes through submitted, then scheduled, before it starts.
                start = self.timeline[idx][1]
                half = self.durations["validating"] / 2
                return "submitted" if now - start < half else "scheduled"
            if status == "completed" and counts["failed"] > 0:
                return "partially_completed"
            return _BEDROCK_WORDS.get(status, status)
        if self.flavour == "cohere":
            return _COHERE_WORDS.get(status, status)
        return status

    def render(self, now: float, *, listing: bool = False) -> dict[str, Any]:
        """The batch object as the API returns it at `now`."""
        idx = self._current(now)
        status = self.timeline[idx][0]
        counts = self.counts_at(now)
        if self.raw_status is not None and self.raw_status[0] == status:
            word = self.raw_status[1]
        else:
            word = self._word(status, idx, now, counts)
            if listing and self.flavour == "bedrock":
                word = _pascal(word)  # Bedrock list results spell states in PascalCase
        scale = 1 if self.flavour == "openai" else 1000  # Bedrock/Cohere/Vertex: milliseconds
        first: dict[str, float] = {}
        for name, t in self.timeline[: idx + 1]:
            first.setdefault(name, t)
        created = self.timeline[0][1]
        out: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": self._errors(status),
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": word,
            "output_file_id": self.output_file_id_at(now),
            "error_file_id": None,
            "created_at": int(created * scale),
            "in_progress_at": None,
            "expires_at": int((created + DAY_S) * scale),
        }
        for name, key in _STAMPS:
            stamp = first.get(name)
            out[key] = int(stamp * scale) if stamp is not None else None
        out["request_counts"] = counts
        out["metadata"] = dict(self.metadata) if self.metadata is not None else None
        return out

    def _errors(self, status: str) -> Any:
        if self.errors is not None:
            if isinstance(self.errors, list):
                return {"object": "list", "data": self.errors}
            return self.errors
        if status == "failed":
            line = {
                "code": "invalid_request",
                "message": "The batch input file is not valid.",
                "param": None,
                "line": None,
            }
            return {"object": "list", "data": [line]}
        return None
