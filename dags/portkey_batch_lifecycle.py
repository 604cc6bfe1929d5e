"""The whole life of a Portkey batch: submit, wait without holding a worker, fetch results.

If anything fails while the batch runs, the teardown cancels it, so an abandoned batch does
not keep running (and billing). When everything succeeds the teardown finds the batch
completed and leaves it alone. Set up the ``portkey_default`` connection first (see
docs/connections.md).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_portkey.operators.batch import (
    PortkeyBatchResultsOperator,
    PortkeyCancelBatchOperator,
    PortkeyCreateBatchOperator,
)
from airflow_portkey.sensors.batch import PortkeyBatchSensor

# Seconds between polls; the tests and the demo shorten it, since their batches take seconds.
POLL_SECONDS = float(os.environ.get("PORTKEY_EXAMPLE_POLL_SECONDS", "60"))

# Each request of the batch, in OpenAI's batch format.
REQUESTS = [
    {
        "custom_id": f"review-{number}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"Summarise review {number} in one line."}],
        },
    }
    for number in range(1, 6)
]

with DAG(
    "portkey_batch_lifecycle",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    tags=["portkey", "example"],
):
    # Upload the requests and create the batch; the id goes to XCom (key "batch_id") at once.
    submit = PortkeyCreateBatchOperator(
        task_id="submit_batch",
        input=REQUESTS,
        metadata={"team": "reviews"},
    )

    # Wait in the triggerer: no worker slot is held while the batch runs.
    wait = PortkeyBatchSensor(
        task_id="wait_for_batch",
        batch_id=submit.output["batch_id"],
        deferrable=True,
        poke_interval=POLL_SECONDS,
        timeout=3600,
    )

    # Stream the output JSONL to a file (a local path here; an ObjectStoragePath works too).
    results = PortkeyBatchResultsOperator(
        task_id="fetch_results",
        batch_id=submit.output["batch_id"],
        output_path="/tmp/portkey-results/{{ run_id | replace(':', '_') }}.jsonl",
    )

    # Runs whatever happens upstream: if a task failed, cancels every batch of this run that
    # is still running (found by the stamp in its metadata); after a success it sends nothing.
    cancel = PortkeyCancelBatchOperator(task_id="cancel_if_abandoned", this_dag_run=True)

    submit >> wait >> results >> cancel.as_teardown(setups=submit)
