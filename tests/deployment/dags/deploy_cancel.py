"""Deployment tier: a cancel operator waiting in a worker slot for a batch stuck in cancelling."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_portkey.operators.batch import PortkeyCancelBatchOperator

with DAG(
    "portkey_deploy_cancel",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    params={"batch_id": ""},
    max_active_runs=4,
):
    PortkeyCancelBatchOperator(
        task_id="cancel",
        batch_id="{{ params.batch_id }}",
        wait_for_termination=True,
        deferrable=False,
        poll_interval=1,
        wait_timeout=900,
    )
