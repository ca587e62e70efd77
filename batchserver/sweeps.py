"""Periodic sweeps that `manage.py runtasks` runs every BATCHSERVER_SWEEP_SECONDS: each app registers its own
(in its AppConfig.ready), so the task cluster's supervisor needs to know none of them. Each runs on its own: one
that fails is logged and the others still run. No statement of a sweep waits more than LOCK_WAIT_SECONDS for a
row that another transaction holds (a worker stalled in the middle of a write, say): that row is left for the
next round, and healing goes on for the others."""

from __future__ import annotations

import logging
from collections.abc import Callable

from batchserver.db import lock_wait_at_most

logger = logging.getLogger(__name__)

_sweeps: dict[str, Callable[[], object]] = {}
LOCK_WAIT_SECONDS = 3.0


def register(name: str, sweep: Callable[[], object]) -> None:
    """Run `sweep()` on every round; what it returns (a report, or a count) is logged when it is not empty."""
    _sweeps[name] = sweep


def run_all() -> dict[str, object]:
    reports = {}
    for name, sweep in _sweeps.items():
        try:
            with lock_wait_at_most(LOCK_WAIT_SECONDS):
                reports[name] = sweep()
        except Exception:
            from django.db import close_old_connections

            logger.exception("sweep %s failed", name)
            close_old_connections()
    return reports
