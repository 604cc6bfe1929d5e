"""Tier 4, last of all (conftest orders it so): after every scenario of the tier, in this
module and the others, no log that Airflow wrote holds a credential of the connection."""

from __future__ import annotations

from tests.deployment.harness import Deployment


def test_no_log_of_the_run_holds_a_credential(deployment: Deployment) -> None:
    d = deployment
    files = d.airflow.log_files()
    task_logs = [f for f in files if "dag_id=" in str(f)]
    trigger_logs = [f for f in task_logs if ".trigger." in f.name]
    component_logs = [f for f in files if f not in task_logs]
    # The check reads real logs: each kind is there, and the logs do name the connection.
    assert task_logs and component_logs, files
    assert any(f.name.startswith("triggerer") for f in component_logs), component_logs
    text = {f: f.read_bytes().decode("utf-8", "replace") for f in files}
    assert any("portkey_default" in t or d.emulator.base_url in t for t in text.values())
    leaks = sorted(
        f"{f.relative_to(d.root)}: {secret[:8]}..."
        for f, t in text.items()
        for secret in d.emulator.secrets
        if secret in t
    )
    assert leaks == [], leaks
    print(
        f"\nDEPLOY 6-secrets: files={len(files)} task_logs={len(task_logs)} "
        f"trigger_logs={len(trigger_logs)} component_logs={len(component_logs)} "
        f"bytes={sum(len(t) for t in text.values())} leaks=0"
    )
