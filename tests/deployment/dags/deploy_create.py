"""Deployment tier: a task that creates a batch and waits for it in its worker slot (sync
mode), with one retry: scenario 3 kills its Celery worker mid-wait."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_portkey.operators.batch import PortkeyCreateBatchOperator

with DAG(
    "portkey_deploy_create",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=4,
):
    PortkeyCreateBatchOperator(
        task_id="create",
        input=[
            {
                "custom_id": "r1",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            }
        ],
        wait_for_completion=True,
        deferrable=False,
        poll_interval=1,
        timeout=900,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
