"""``[core] hostname_callable`` of the deployment tier: each component reports its own process
name (``triggerer-1``, ``worker-2``, ...) as its host, as if each ran on a machine of its own,
so that a test can tell from the REST API which triggerer holds a trigger and which worker runs
a task. Task processes inherit their worker's name."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("PORTKEY_DEPLOY_HOST") or socket.getfqdn()
