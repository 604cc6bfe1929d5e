"""Two ways to cancel a batch when the pipeline that started it fails.

1. ``portkey_cancel_on_failure_teardown``: a teardown task (recommended). It runs after the
   work whatever happened; when the work failed it cancels every batch this DAG run created
   and that still runs (found by the stamp each batch carries in its metadata: no XCom
   wiring, every task, try and map index), and the DAG run still ends failed. When the run
   succeeded it sends nothing.
2. ``portkey_cancel_on_failure_notifier``: a failure callback on the task that fails. It is
   simpler to add to an existing DAG, but it only runs if the failing task's process can.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_portkey.notifications.cancel import PortkeyCancelBatchesNotifier
from airflow_portkey.operators.batch import PortkeyCancelBatchOperator, PortkeyCreateBatchOperator

REQUESTS = [
    {
        "custom_id": f"doc-{number}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
    }
    for number in range(3)
]

with DAG(
    "portkey_cancel_on_failure_teardown",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    tags=["portkey", "example"],
):
    submit = PortkeyCreateBatchOperator(task_id="submit_batch", input=REQUESTS)

    @task
    def load_warehouse() -> None:
        # Stands for any downstream step that fails while the batch is still running.
        raise RuntimeError("the warehouse is down")

    # Cancels what this run started, only if a task it tears down failed.
    cancel = PortkeyCancelBatchOperator(task_id="cancel_batch", this_dag_run=True)
    submit >> load_warehouse() >> cancel.as_teardown(setups=submit)

with DAG(
    "portkey_cancel_on_failure_notifier",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    tags=["portkey", "example"],
):
    submit = PortkeyCreateBatchOperator(task_id="submit_batch", input=REQUESTS)

    # When this task fails, its callback cancels the batches this run created.
    @task(on_failure_callback=PortkeyCancelBatchesNotifier(this_dag_run=True))
    def load_warehouse(batch: dict) -> None:
        raise RuntimeError("the warehouse is down")

    load_warehouse(submit.output)
