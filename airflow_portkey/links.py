"""The "Portkey logs" button on the tasks that touch a batch (an Airflow operator extra link).

Airflow 3 computes a link on the worker when the task finishes and keeps it in XCom; the UI
reads it from there. The link opens hosted Portkey's logs filtered by the trace id the task's
requests carried. A connection to a self-hosted gateway has no such page: no link then.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)


class PortkeyLogsLink(BaseOperatorLink):
    """Opens Portkey's logs for the requests of one task try (hosted Portkey only)."""

    name = "Portkey logs"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow_portkey._core.trace import logs_url, trace_from_context

        conn_id: Any = getattr(operator, "portkey_conn_id", None)
        if not isinstance(conn_id, str) or not conn_id:
            return ""
        try:
            from airflow.sdk import BaseHook

            from airflow_portkey.hooks._connections import settings_of

            # Only the base URL matters: no hook, so no second round of the task's log lines.
            hosted = settings_of(conn_id, BaseHook.get_connection(conn_id)).is_hosted
        except Exception as error:  # a link must never fail the task: no link then
            log.debug("No Portkey logs link: connection %r unusable (%s)", conn_id, error)
            return ""
        trace_id, _ = trace_from_context({"ti": ti_key})
        if not hosted or not trace_id:
            return ""
        return logs_url(trace_id)
