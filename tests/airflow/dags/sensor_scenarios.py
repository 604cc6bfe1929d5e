"""Scenario DAGs for the sensor: one DAG per mode and timeout variant.

The batch id comes in as a DAG param, so each test seeds a batch in the emulator and runs
the DAG with ``run_conf={"batch_id": ...}``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_portkey.sensors.batch import PortkeyBatchSensor

MODES = {
    "poke": {"mode": "poke", "deferrable": False},
    "reschedule": {"mode": "reschedule", "deferrable": False},
    "deferrable": {"deferrable": True},
}
TIMEOUT_VARIANTS = {
    "plain": {},
    "soft_fail": {"soft_fail": True},
    "cancel": {"cancel_on_timeout": True},
    "soft_fail_cancel": {"soft_fail": True, "cancel_on_timeout": True},
}

# Seconds between pokes. dag.test() re-runs a rescheduled sensor at once if its reschedule date
# has passed when it next looks (tens of milliseconds after the poke), else it sleeps a whole
# second: a reschedule interval that short keeps each reschedule from costing a second.
POKE_INTERVAL = {"poke": 0.1, "reschedule": 0.001, "deferrable": 0.1}
# A wait that never finishes times out after this many seconds (a poll takes milliseconds).
TIMEOUT = 0.3

for mode_name, mode in MODES.items():
    for variant_name, variant in {"wait": {}, **TIMEOUT_VARIANTS}.items():
        dag_id = f"sensor_{mode_name}_{variant_name}"
        with DAG(
            dag_id,
            schedule=None,
            start_date=pendulum.datetime(2024, 1, 1),
            catchup=False,
            params={"batch_id": ""},
        ):
            wait = PortkeyBatchSensor(
                task_id="wait",
                batch_id="{{ params.batch_id }}",
                poke_interval=POKE_INTERVAL[mode_name],
                timeout=30 if variant_name == "wait" else TIMEOUT,
                **mode,
                **variant,
            )

            @task
            def downstream(batch: dict) -> str:
                return batch["status"]

            downstream(wait.output)
