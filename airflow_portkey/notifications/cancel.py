"""A ready-made failure callback that cancels the batches a pipeline started."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseNotifier

from airflow_portkey._core.defaults import DEFAULT_CONN_ID
from airflow_portkey._tasks import batch_ids_from, cancel_many


class PortkeyCancelBatchesNotifier(BaseNotifier):
    """Cancel the Portkey batches named by the XCom of given tasks (and/or given ids).

    Use it as ``on_failure_callback``, so that a failed pipeline stops what it started::

        @task(on_failure_callback=PortkeyCancelBatchesNotifier(task_ids=["submit"]))
        def process(batch_id): ...

    Where Airflow runs it: a *task's* ``on_failure_callback`` runs in the worker, in the
    failed task's own process, right after the failure (it can pull XCom and reach Portkey
    from there). A *DAG's* ``on_failure_callback`` runs in the DAG processor (Airflow 3), after
    the run is marked failed; it needs the Portkey connection there too. A callback is best
    effort: if it cannot run (the worker died), nothing cancels; the teardown pattern
    (``PortkeyCancelBatchOperator(...).as_teardown(setups=...)``) is the sturdier choice.

    :param task_ids: tasks whose XCom holds batch ids (a string, a batch dict, or a list of
        either, mapped tasks included).
    :param batch_ids: ids to cancel besides those (templated).
    :param key: the XCom key to read (default ``return_value``).
    :param portkey_conn_id: the Portkey connection (templated).
    :param max_concurrency: cancel requests in flight at once.
    """

    template_fields: Sequence[str] = ("batch_ids", "portkey_conn_id")

    def __init__(
        self,
        *,
        task_ids: str | Sequence[str] = (),
        batch_ids: str | Sequence[str] = (),
        key: str = "return_value",
        portkey_conn_id: str = DEFAULT_CONN_ID,
        max_concurrency: int = 16,
    ) -> None:
        super().__init__()
        self.task_ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        self.batch_ids = batch_ids
        self.key = key
        self.portkey_conn_id = portkey_conn_id
        self.max_concurrency = max_concurrency
        if not self.task_ids and not batch_ids:
            raise ValueError("PortkeyCancelBatchesNotifier needs task_ids or batch_ids")

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

    def notify(self, context: Any) -> None:
        ids = self._collect(context)
        if not ids:
            return
        self.log.warning("Cancelling %d Portkey batch(es) after a failure: %s", len(ids), ids)
        from airflow_portkey._core.trace import trace_from_context
        from airflow_portkey.hooks.portkey import PortkeyHook

        trace_id, metadata = trace_from_context(context)
        hook = PortkeyHook(
            self.portkey_conn_id,
            trace_id=trace_id,
            metadata=metadata,
            max_connections=min(self.max_concurrency, len(ids)),
        )
        # The hook has logged what each cancel did; only the failures need saying again.
        for batch_id, result in zip(ids, cancel_many(hook, ids), strict=True):
            if isinstance(result, BaseException):
                self.log.error("Could not cancel batch %s: %s", batch_id, result)
