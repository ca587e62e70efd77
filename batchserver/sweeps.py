"""Periodic sweeps that `manage.py runtasks` runs every BATCHSERVER_SWEEP_SECONDS: each app registers its own
(in its AppConfig.ready), so the task cluster's supervisor needs to know none of them. Each runs on its own: one
that fails is logged and the others still run."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

_sweeps: dict[str, Callable[[], object]] = {}


def register(name: str, sweep: Callable[[], object]) -> None:
    """Run `sweep()` on every round; what it returns (a report, or a count) is logged when it is not empty."""
    _sweeps[name] = sweep


def run_all() -> dict[str, object]:
    reports = {}
    for name, sweep in _sweeps.items():
        try:
            reports[name] = sweep()
        except Exception:
            from django.db import close_old_connections

            logger.exception("sweep %s failed", name)
            close_old_connections()
    return reports
