"""Operations: cancel the batches named in the run's config and wait until they have stopped.

Trigger it with ``{"batch_ids": ["batch_abc", "batch_def"]}``. Batches that already finished
are reported and left alone; ``cancelling`` batches are waited for until they are
``cancelled``, in the triggerer, without holding a worker slot.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param

from airflow_portkey.operators.batch import PortkeyCancelBatchOperator

# Seconds between polls; the tests and the demo shorten it, since their batches stop at once.
POLL_SECONDS = float(os.environ.get("PORTKEY_EXAMPLE_POLL_SECONDS", "1"))

with DAG(
    "portkey_cancel_batches",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    params={"batch_ids": Param([], type="array", items={"type": "string"}, minItems=1)},
    render_template_as_native_obj=True,  # so the list stays a list, not its text
    tags=["portkey", "example", "operations"],
):
    PortkeyCancelBatchOperator(
        task_id="cancel_batches",
        batch_id="{{ params.batch_ids }}",
        wait_for_termination=True,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        wait_timeout=1800,
    )
