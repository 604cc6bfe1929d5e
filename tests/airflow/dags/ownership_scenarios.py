"""Scenario DAGs for ownership: a task that creates a batch cancels it on every bad end,
a retry re-attaches, and a teardown cancels what the DAG run started only when it failed.

The connection comes in as a DAG param (``conn_id``), so a test can point a DAG at a
connection with few retries and the emulator's faults.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_portkey.notifications.cancel import PortkeyCancelBatchesNotifier
from airflow_portkey.operators.batch import PortkeyCancelBatchOperator, PortkeyCreateBatchOperator

START = pendulum.datetime(2024, 1, 1)
REQUESTS = [
    {
        "custom_id": f"r-{number}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
    }
    for number in range(3)
]
PARAMS = {"conn_id": "portkey_default"}

# A create-and-wait task, sync or deferrable, with a short timeout variant and an
# execution_timeout variant (the task is killed while it waits). The execution_timeout also
# bounds the upload and the create before the wait (a quarter of a second on a cold start).
EXECUTION_TIMEOUT = timedelta(seconds=1)
VARIANTS: dict[str, dict[str, object]] = {
    "wait_sync": {"deferrable": False},
    "wait_deferrable": {"deferrable": True},
    "timeout_sync": {"deferrable": False, "timeout": 0.5},
    "timeout_deferrable": {"deferrable": True, "timeout": 0.5},
    "exec_timeout_sync": {"deferrable": False, "execution_timeout": EXECUTION_TIMEOUT},
    "exec_timeout_deferrable": {"deferrable": True, "execution_timeout": EXECUTION_TIMEOUT},
    "keep_on_error_sync": {"deferrable": False, "cancel_on_error": False},
    "retry_sync": {"deferrable": False, "retries": 1, "retry_delay": timedelta(seconds=0)},
    "retry_deferrable": {"deferrable": True, "retries": 1, "retry_delay": timedelta(seconds=0)},
}

for name, options in VARIANTS.items():
    with DAG(f"own_{name}", schedule=None, start_date=START, catchup=False, params=PARAMS):
        PortkeyCreateBatchOperator(
            task_id="create",
            input=REQUESTS,
            portkey_conn_id="{{ params.conn_id }}",
            wait_for_completion=True,
            poll_interval=0.05,
            **options,  # type: ignore[arg-type]
        )

# Setups create batches (one plain, two mapped, one never waited for), work fails or not,
# and the teardown cancels every running batch of the run, found by the stamp alone.
for name, teardown_options in {"teardown": {}, "teardown_always": {"when": "always"}}.items():
    with DAG(
        f"own_{name}",
        schedule=None,
        start_date=START,
        catchup=False,
        params={**PARAMS, "fail": False},
    ):
        single = PortkeyCreateBatchOperator(task_id="create", input=REQUESTS)
        mapped = PortkeyCreateBatchOperator.partial(task_id="create_mapped").expand(
            input=[REQUESTS, REQUESTS]
        )

        @task
        def work(params: dict) -> None:
            if params["fail"]:
                raise RuntimeError("downstream work failed")

        cancel = PortkeyCancelBatchOperator(
            task_id="cancel",
            this_dag_run=True,
            **teardown_options,  # type: ignore[arg-type]
        )
        [single, mapped] >> work() >> cancel.as_teardown(setups=[single, mapped])

# The notifier with this_dag_run: a failing task cancels what the run created, no XCom wiring.
with DAG(
    "own_notifier",
    schedule=None,
    start_date=START,
    catchup=False,
    params={**PARAMS, "fail": True},
):
    submitted = PortkeyCreateBatchOperator(task_id="create", input=REQUESTS)

    @task(on_failure_callback=PortkeyCancelBatchesNotifier(this_dag_run=True))
    def process(params: dict) -> None:
        if params["fail"]:
            raise RuntimeError("processing failed")

    submitted >> process()
