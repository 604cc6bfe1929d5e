"""A ready-made failure callback that cancels the batches a pipeline started."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from airflow_portkey._core.defaults import DEFAULT_CONN_ID
from airflow_portkey._tasks import batch_ids_from, cancel_many, run_scope_of, run_started_at

if TYPE_CHECKING:
    from airflow_portkey.hooks.portkey import PortkeyHook


class PortkeyCancelBatchesNotifier(BaseNotifier):
    """Cancel every running batch this DAG run created, and/or those named by the XCom of given
    tasks or given ids.

    Use it as ``on_failure_callback``, so that a failed pipeline stops what it started::

        @task(on_failure_callback=PortkeyCancelBatchesNotifier(this_dag_run=True))
        def process(batch_id): ...

    ``this_dag_run`` finds the batches by the stamp this provider puts in each batch's metadata
    (every task, try and map index of the run, ids that never reached an XCom included).

    Where Airflow runs it: a *task's* ``on_failure_callback`` runs in the worker, in the
    failed task's own process, right after the failure (it can pull XCom and reach Portkey
    from there). A *DAG's* ``on_failure_callback`` runs in the DAG processor (Airflow 3), after
    the run is marked failed; it needs the Portkey connection there too. A callback is best
    effort: if it cannot run (the worker died), nothing cancels; the teardown pattern
    (``PortkeyCancelBatchOperator(...).as_teardown(setups=...)``) is the sturdier choice.

    :param this_dag_run: cancel every running batch this DAG run created.
    :param task_ids: tasks whose XCom holds batch ids (a string, a batch dict, or a list of
        either, mapped tasks included).
    :param batch_ids: ids to cancel besides those (templated).
    :param key: the XCom key to read (default ``return_value``).
    :param portkey_conn_id: the Portkey connection (templated).
    :param max_concurrency: cancel requests in flight at once.
    :param search_pages: pages of 100 recent batches to look through for ``this_dag_run``.
    """

    template_fields: Sequence[str] = ("batch_ids", "portkey_conn_id")

    def __init__(
        self,
        *,
        this_dag_run: bool = False,
        task_ids: str | Sequence[str] = (),
        batch_ids: str | Sequence[str] = (),
        key: str = "return_value",
        portkey_conn_id: str = DEFAULT_CONN_ID,
        max_concurrency: int = 16,
        search_pages: int = 5,
    ) -> None:
        super().__init__()
        self.this_dag_run = this_dag_run
        self.search_pages = search_pages
        self.task_ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        self.batch_ids = batch_ids
        self.key = key
        self.portkey_conn_id = portkey_conn_id
        self.max_concurrency = max_concurrency
        if not self.task_ids and not batch_ids and not this_dag_run:
            raise ValueError(
                "PortkeyCancelBatchesNotifier needs this_dag_run=True, task_ids or batch_ids"
            )

    def _collect(self, context: Any) -> list[str]:
        values: list[Any] = []
        if self.batch_ids:
            values.append(self.batch_ids)
        ti = context.get("ti") or context.get("task_instance")
        for task_id in self.task_ids:
            if ti is None:
                self.log.warning("No task instance in the context; cannot read %s's XCom", task_id)
                continue
            pulled = ti.xcom_pull(task_ids=task_id, key=self.key)
            if pulled is None:
                self.log.info("Task %s pushed no batch ids; nothing to cancel for it", task_id)
            else:
                values.append(pulled)
        ids: list[str] = []
        for value in values:
            ids.extend(batch_ids_from(value, field="batch ids"))
        return list(dict.fromkeys(ids))

    def _this_dag_run(self, hook: PortkeyHook, context: Any) -> list[str]:
        scope = run_scope_of(context)
        if scope is None:
            self.log.warning("No DAG run in the context; cannot find its batches")
            return []
        found = hook.find_batches(
            lambda b: scope.holds(b) and not b.is_terminal,
            not_before=run_started_at(context),
            max_pages=self.search_pages,
        )
        return [b.id for b in found]

    def notify(self, context: Any) -> None:
        from airflow_portkey._core.trace import trace_from_context
        from airflow_portkey.hooks.portkey import PortkeyHook

        trace_id, metadata = trace_from_context(context)
        hook = PortkeyHook(
            self.portkey_conn_id,
            trace_id=trace_id,
            metadata=metadata,
            max_connections=self.max_concurrency,
        )
        ids = self._collect(context)
        if self.this_dag_run:
            ids = list(dict.fromkeys([*ids, *self._this_dag_run(hook, context)]))
        if not ids:
            self.log.info("No running Portkey batch to cancel")
            return
        self.log.warning("Cancelling %d Portkey batch(es) after a failure: %s", len(ids), ids)
        # The hook has logged what each cancel did; only the failures need saying again.
        for batch_id, result in zip(ids, cancel_many(hook, ids), strict=True):
            if isinstance(result, BaseException):
                self.log.error("Could not cancel batch %s: %s", batch_id, result)
