"""The create operator through real Airflow runs: request bodies are sent as written."""

from __future__ import annotations

import json
from pathlib import Path

from tests.airflow.dags.create_scenarios import REQUESTS


def uploaded_requests(emulator) -> list[list[dict]]:
    """The request lines of each uploaded file, as the emulator received them."""
    uploads = []
    for request in emulator.requests_to(route="files.create"):
        lines = [line for line in request.body.split(b"\r\n") if line.startswith(b"{")]
        uploads.append([json.loads(line) for jsonl in lines for line in jsonl.splitlines()])
    return uploads


def test_prompts_with_jinja_syntax_reach_portkey_as_written(emulator, run_dag, tmp_path: Path):
    input_file = tmp_path / "requests-{{ not a template }}.jsonl"
    input_file.write_text("".join(json.dumps(r) + "\n" for r in REQUESTS))
    result = run_dag("create_prompts_as_data", input_path=str(input_file))
    assert result.states == {"from_list": "success", "from_file": "success"}

    assert uploaded_requests(emulator) == [REQUESTS, REQUESTS]
    creates = [r.json() for r in emulator.requests_to(route="batches.create")]
    # Around the requests, templates are rendered: the endpoint and the metadata.
    assert [c["endpoint"] for c in creates] == ["/v1/chat/completions"] * 2
    assert [c["metadata"]["dag"] for c in creates] == ["create_prompts_as_data"] * 2
