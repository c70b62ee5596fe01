"""Encore's backend: settings, storage, database, catalog, voices, Prefect flows and the CLI.

It may import `gpu_worker`; it never imports `bots`.
"""

import os

# Telemetry is off unless the operator opts in; these must be set before Prefect is imported.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # jobs never download weights
