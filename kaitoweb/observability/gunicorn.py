"""Gunicorn hooks: ``gunicorn -c python:kaitoweb.observability.gunicorn kaitoweb.wsgi``.

In prometheus_client's multiprocess mode a dead worker's live gauges must be dropped, or its
last values stay in every scrape. Counters and histograms of dead workers are kept: they are
totals.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
