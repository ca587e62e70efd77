"""python manage.py runtasks: the task cluster (validation, finalizing, retention) under a supervisor, and the
sweeps that enqueue work nobody is doing (batchserver.sweeps; batches_api.services.sweep, say) every
BATCHSERVER_SWEEP_SECONDS.

Run one or more (on several machines, say): every job is claimed, so extra sweeps and duplicate tasks only do
nothing. See batchserver/supervisor.py for what the supervisor heals.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, is_dataclass

from django.conf import settings
from django.core.management.base import BaseCommand

from batchserver import sweeps
from batchserver.supervisor import Cluster, Supervisor

logger = logging.getLogger(__name__)


class Sweeper:
    def __init__(self) -> None:
        self.next_sweep = 0.0

    def __call__(self, cluster: Cluster) -> None:
        if time.monotonic() < self.next_sweep:
            return None
        self.next_sweep = time.monotonic() + settings.BATCHSERVER_SWEEP_SECONDS
        for name, report in sweeps.run_all().items():
            figures = asdict(report) if is_dataclass(report) and not isinstance(report, type) else {"done": report}
            if any(figures.values()):
                logger.info(
                    "sweep %s: %s", name, ", ".join(f"{key} {value}" for key, value in figures.items() if value)
                )
        return None


class Command(BaseCommand):
    help = "Run the task cluster (django-q2, supervised) and the sweep for lost work."

    def handle(self, *args, **options):
        env = {**os.environ, "Q_CLUSTER_NAME": settings.TASKS_CLUSTER}
        self.stdout.write(f"Task cluster '{settings.TASKS_CLUSTER}' with {settings.Q_CLUSTER['workers']} workers.")
        supervisor = Supervisor(
            name="tasks", env=env, workers=settings.Q_CLUSTER["workers"], signal_workers=False, tick=Sweeper()
        )
        raise SystemExit(supervisor.run())
