"""Deployment tier: a sensor mapped over many batch ids, all deferred in one triggerer at once,
then one downstream task that takes every sensor's result.

One downstream task rather than one per sensor: a mapped downstream task doubles the worker
work of this scenario (200 more task runs, about 140 s on a 2-core machine) and proves nothing
the sensors' own resumption does not already prove.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

from airflow_portkey.sensors.batch import PortkeyBatchSensor

with DAG(
    "portkey_deploy_many",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    params={"batch_ids": []},
    max_active_tasks=512,
):

    @task
    def batch_ids(params: dict) -> list[str]:
        return list(params["batch_ids"])

    waits = PortkeyBatchSensor.partial(
        task_id="wait",
        deferrable=True,
        # The trigger polls once as it starts, then every 30 s: 200 triggers polling every
        # few seconds would take CPU from the workers that the scenario is waiting on.
        poke_interval=30,
        timeout=900,
    ).expand(batch_id=batch_ids())

    @task
    def after(batches: list[dict], **context: object) -> int:
        # One line per batch and execution: a second execution would double the lines.
        ti = context["ti"]
        lines = [
            f"{ti.dag_id} {ti.run_id} {ti.task_id} {ti.map_index} {ti.try_number} {batch['id']}"
            for batch in batches
            if batch["status"] == "completed"
        ]
        with open(os.environ["PORTKEY_DEPLOY_LEDGER"], "a") as ledger:
            ledger.write("".join(line + "\n" for line in lines))
        return len(lines)

    after(waits.output)
