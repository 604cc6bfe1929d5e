"""Deployment tier: one deferrable sensor handed to the real triggerer, then a downstream task.

Scenarios 1-3 (complete, triggerer killed mid-wait, marked failed) all run this DAG. The
sensor has ``cancel_on_kill=True`` so that a normal completion also proves no stray cancel.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

from airflow_portkey.sensors.batch import PortkeyBatchSensor

with DAG(
    "portkey_deploy_wait",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    params={"batch_id": ""},
    max_active_runs=32,  # scenario 1 may start up to 16 runs that all stay deferred
):
    wait = PortkeyBatchSensor(
        task_id="wait",
        batch_id="{{ params.batch_id }}",
        deferrable=True,
        poke_interval=1,
        timeout=900,
        cancel_on_kill=True,
    )

    @task
    def after(batch: dict, **context: object) -> str:
        # One line per execution: the test counts them to prove the task ran exactly once.
        ti = context["ti"]
        line = f"{ti.dag_id} {ti.run_id} {ti.task_id} {ti.map_index} {ti.try_number} {batch['id']}"
        with open(os.environ["PORTKEY_DEPLOY_LEDGER"], "a") as ledger:
            ledger.write(line + "\n")
        return batch["status"]

    after(wait.output)
