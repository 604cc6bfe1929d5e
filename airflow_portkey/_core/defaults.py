"""Defaults the task classes need when a DAG file is parsed.

Every DAG file that imports an operator pays for what that import loads, again at each
parse: this module and what the task modules import at their top stay free of the hook,
the HTTP libraries and the protocol, which load only when a task runs.
"""

from __future__ import annotations

from datetime import timedelta

CONN_TYPE = "portkey"
DEFAULT_CONN_ID = "portkey_default"

# Failed polls in a row a wait tolerates (network, 5xx, 429) before it gives up.
DEFAULT_MAX_TRANSIENT_FAILURES = 5

# Seconds between "still waiting" lines in a task's log while a batch shows no change.
DEFAULT_STILL_WAITING_EVERY = 600.0

# The framework's deferral timeout sits this far beyond the trigger's own deadline, so the
# trigger's timeout event (and the cancel it may lead to) always arrives first.
DEFER_TIMEOUT_MARGIN = timedelta(minutes=2)
