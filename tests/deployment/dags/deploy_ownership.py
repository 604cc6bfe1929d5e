"""Deployment tier, ownership: tasks that create a batch and wait for it, in a worker slot or in
the triggerer, for the spend-safety scenarios of tests/deployment/test_ownership.py.

- ``portkey_own_sync``: create and wait in the worker (killed, marked failed, SIGKILLed and
  retried, its create's answer lost).
- ``portkey_own_deferred``: create and wait in the triggerer (marked failed, triggerer
  restarted).
- ``portkey_own_both``: one of each in the same DAG run (the run marked failed).
- ``portkey_own_deferred_timeout``: waits in the triggerer past its ``execution_timeout``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_portkey.operators.batch import PortkeyCreateBatchOperator

REQUESTS = [
    {
        "custom_id": f"r-{number}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
    }
    for number in range(3)
]


def create(task_id: str, *, deferrable: bool, **options: object) -> PortkeyCreateBatchOperator:
    arguments: dict[str, object] = {
        "wait_for_completion": True,
        "poll_interval": 1,
        "timeout": 900,
        "retries": 1,
        "retry_delay": timedelta(seconds=2),
        **options,
    }
    return PortkeyCreateBatchOperator(
        task_id=task_id,
        input=REQUESTS,
        deferrable=deferrable,
        **arguments,  # type: ignore[arg-type]
    )


for dag_id, deferrable in {"portkey_own_sync": False, "portkey_own_deferred": True}.items():
    with DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=8,
    ):
        create("create", deferrable=deferrable)

with DAG(
    "portkey_own_both",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=4,
):
    create("in_worker", deferrable=False)
    create("in_triggerer", deferrable=True)

with DAG(
    "portkey_own_deferred_timeout",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=4,
):
    create("create", deferrable=True, execution_timeout=timedelta(seconds=20), retries=0)
