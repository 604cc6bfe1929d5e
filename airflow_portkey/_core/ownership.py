"""Which batches a task or a DAG run owns, found again from the stamp in their metadata.

Every batch this provider creates carries the task instance that created it (dag id, run id,
task id, map index) in its metadata. Portkey's ``GET /batches`` has no filter, so finding a
task's batches again means paging through the newest ones: :func:`find_stamped` does that,
bounded in pages and by ``created_at`` (the list is newest first, so the first batch older
than the bound ends the search). :func:`resume_choice` is the rule a retry follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from airflow_portkey._core import plans
from airflow_portkey._core.batches import Batch, BatchStatus
from airflow_portkey._core.messages import Note, Plan
from airflow_portkey._core.plans import CallContext

DAG_ID_KEY = "airflow_dag_id"
RUN_ID_KEY = "airflow_run_id"
TASK_ID_KEY = "airflow_task_id"
MAP_INDEX_KEY = "airflow_map_index"

# A search reads at most this many pages of 100 batches unless told otherwise.
DEFAULT_MAX_PAGES = 5
PAGE_SIZE = 100

Resume = Literal["reattach", "done", "resubmit"]


def _metadata(batch: Batch) -> Mapping[str, object]:
    value = batch.raw.get("metadata")
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True, slots=True)
class RunScope:
    """A DAG run: every batch any of its tasks created, in any try or map index."""

    dag_id: str
    run_id: str

    def holds(self, batch: Batch) -> bool:
        meta = _metadata(batch)
        return meta.get(DAG_ID_KEY) == self.dag_id and meta.get(RUN_ID_KEY) == self.run_id


@dataclass(frozen=True, slots=True)
class Stamp:
    """A task instance (across its tries): what a batch's metadata says created it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    def metadata(self) -> dict[str, str]:
        return {
            DAG_ID_KEY: self.dag_id,
            RUN_ID_KEY: self.run_id,
            TASK_ID_KEY: self.task_id,
            MAP_INDEX_KEY: str(self.map_index),
        }

    @property
    def run(self) -> RunScope:
        return RunScope(self.dag_id, self.run_id)

    def owns(self, batch: Batch) -> bool:
        meta = _metadata(batch)
        # Batches stamped before the map index was part of the stamp count as unmapped.
        map_index = meta.get(MAP_INDEX_KEY, "-1")
        return (
            self.run.holds(batch)
            and meta.get(TASK_ID_KEY) == self.task_id
            and map_index == str(self.map_index)
        )


def find_stamped(
    ctx: CallContext,
    select: Callable[[Batch], bool],
    *,
    not_before: float,
    max_pages: int = DEFAULT_MAX_PAGES,
    page_size: int = PAGE_SIZE,
) -> Plan[list[Batch]]:
    """The batches ``select`` accepts among those created at or after ``not_before`` (Unix
    seconds), newest first, reading at most ``max_pages`` pages."""
    if max_pages < 1:
        raise ValueError(f"max_pages must be at least 1, got {max_pages}")
    found: list[Batch] = []
    after: str | None = None
    visited: set[str] = set()
    for _ in range(max_pages):
        page = yield from plans.list_page(ctx, page_size, after, visited)
        for batch in page.batches:
            created = batch.timestamps.get("created_at")
            if created is not None and created < not_before:
                return found  # newest first: every batch after this one is older still
            if select(batch):
                found.append(batch)
        if page.next_after is None:
            return found
        after = page.next_after
        visited.add(after)
    yield Note(
        logging.WARNING,
        f"Stopped looking for stamped batches after {max_pages} pages of {page_size}; "
        "older batches were not searched",
    )
    return found


def resume_choice(
    batch: Batch, success: frozenset[BatchStatus], failure: frozenset[BatchStatus]
) -> Resume:
    """What a retry does with a batch an earlier try created: wait for it again while it runs,
    return it when it succeeded, submit a new one when it failed, expired or was cancelled."""
    if batch.status in success:
        return "done"
    # A batch being cancelled (an earlier try was killed or timed out) will not finish.
    if batch.is_terminal or batch.status in failure or batch.status is BatchStatus.CANCELLING:
        return "resubmit"
    return "reattach"


def pick_own(
    batches: Iterable[Batch], success: frozenset[BatchStatus], failure: frozenset[BatchStatus]
) -> tuple[Resume, Batch | None]:
    """Among a task's earlier batches (newest first): one still running comes first, then one
    that succeeded; with neither, resubmit."""
    done: Batch | None = None
    for batch in batches:
        choice = resume_choice(batch, success, failure)
        if choice == "reattach":
            return choice, batch
        if choice == "done" and done is None:
            done = batch
    return ("done", done) if done is not None else ("resubmit", None)
