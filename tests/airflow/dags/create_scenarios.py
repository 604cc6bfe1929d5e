"""Scenario DAGs for the create operator: request bodies are data, never templates.

The prompts hold Jinja syntax (``{{ }}``, ``{% %}``, ``{# #}``) that must reach Portkey as
written; the path, the endpoint and the metadata around them are templated as usual.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_portkey.operators.batch import PortkeyCreateBatchOperator

PROMPTS = [
    "Hello {{ name }}!",
    "{% for item in items %}- {{ item }}\n{% endfor %}",
    "Keep {# this #} and {{ undefined_variable.attribute }} as they are",
]
REQUESTS = [
    {
        "custom_id": f"prompt-{number}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
    }
    for number, prompt in enumerate(PROMPTS, start=1)
]

with DAG(
    "create_prompts_as_data",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1),
    catchup=False,
    params={"input_path": "", "endpoint": "/v1/chat/completions"},
):
    PortkeyCreateBatchOperator(
        task_id="from_list",
        input=REQUESTS,
        endpoint="{{ params.endpoint }}",
        metadata={"dag": "{{ dag.dag_id }}"},
    )
    PortkeyCreateBatchOperator(
        task_id="from_file",
        input="{{ params.input_path }}",
        metadata={"dag": "{{ dag.dag_id }}"},
    )
