"""Scenario DAGs for cancelling: the teardown pattern, the cancel operator, the notifier."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_portkey.notifications.cancel import PortkeyCancelBatchesNotifier
from airflow_portkey.operators.batch import PortkeyCancelBatchOperator

START = pendulum.datetime(2024, 1, 1)

# A pipeline whose work may fail while its batch runs; the teardown cancels what is left
# when the run failed ("teardown_pipeline"), or whatever happened ("teardown_always_pipeline").
for name, when in {"teardown_pipeline": "failed", "teardown_always_pipeline": "always"}.items():
    with DAG(
        name,
        schedule=None,
        start_date=START,
        catchup=False,
        params={"batch_id": "", "fail": False},
    ):

        @task
        def submitted(params: dict) -> str:
            return params["batch_id"]

        @task
        def work(params: dict) -> None:
            if params["fail"]:
                raise RuntimeError("downstream work failed")

        batch_id = submitted()
        cancel = PortkeyCancelBatchOperator(task_id="cancel", batch_id=batch_id, when=when)
        batch_id >> work() >> cancel.as_teardown(setups=batch_id)

# A failure with tasks after it: the teardown's log names the failed task apart from those
# that did not run because of it, after_boom only through last. boom feeds last directly too:
# dag.test() marks one more task upstream_failed per pass and sleeps a second between passes.
with DAG(
    "teardown_after_a_chain",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"batch_id": ""},
):

    @task
    def submitted(params: dict) -> str:
        return params["batch_id"]

    @task
    def boom() -> None:
        raise RuntimeError("downstream work failed")

    @task
    def after_boom() -> None:
        pass

    @task
    def last() -> None:
        pass

    batch_id = submitted()
    cancel = PortkeyCancelBatchOperator(task_id="cancel", batch_id=batch_id)
    boom_task, last_task = boom(), last()
    batch_id >> boom_task >> after_boom() >> last_task >> cancel.as_teardown(setups=batch_id)
    boom_task >> last_task

# The cancel operator on one id, a list from a mapped task, with or without waiting.
for name, options in {
    "one": {},
    "wait_sync": {"wait_for_termination": True, "deferrable": False, "poll_interval": 0.1},
    "wait_deferrable": {"wait_for_termination": True, "deferrable": True, "poll_interval": 0.1},
    "wait_timeout": {
        "wait_for_termination": True,
        "deferrable": False,
        "poll_interval": 0.1,
        "wait_timeout": 0.5,
    },
}.items():
    with DAG(
        f"cancel_{name}",
        schedule=None,
        start_date=START,
        catchup=False,
        params={"batch_id": ""},
    ):
        PortkeyCancelBatchOperator(task_id="cancel", batch_id="{{ params.batch_id }}", **options)

with DAG(
    "cancel_mapped",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"batch_ids": []},
):

    @task
    def ids(params: dict) -> list[str]:
        return params["batch_ids"]

    @task
    def submit(batch_id: str) -> str:
        return batch_id

    PortkeyCancelBatchOperator(
        task_id="cancel",
        batch_id=submit.expand(batch_id=ids()),
        wait_for_termination=True,
        deferrable=True,
        poll_interval=0.1,
    )

# The notifier: a failing task cancels the batches its upstream pushed, and nothing else.
with DAG(
    "notifier_pipeline",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"batch_ids": [], "fail": True},
):

    @task
    def submit_many(params: dict) -> list[str]:
        return params["batch_ids"]

    @task(on_failure_callback=PortkeyCancelBatchesNotifier(task_ids=["submit_many"]))
    def process(ids: list[str], params: dict) -> None:
        if params["fail"]:
            raise RuntimeError("processing failed")

    process(submit_many())
