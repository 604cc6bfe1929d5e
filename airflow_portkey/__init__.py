"""Apache Airflow provider for Portkey's batch API."""

from __future__ import annotations

__version__ = "0.2.0"
