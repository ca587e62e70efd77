"""python manage.py runworker: one inference worker, a django-q2 cluster of its own under a supervisor.

The supervisor (batchserver/supervisor.py) starts `manage.py runcluster` for the worker's queue
(Q_CLUSTER_NAME=inference-<name>), empties that queue and seeds it with the serving task, and restarts the whole
cluster at once when any of its processes dies or the serving loop stops reporting; it ends engine processes
and marks as stopped the runs of this machine whose process is gone, so their requests are handed out again at
once. SIGTERM/SIGINT make the serving loop give its work back and unload the engine, then the cluster stops;
whatever is left after a few seconds is killed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime

import psutil
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from batches_api.models import Worker
from batches_api.services import workers_stop
from batchserver.supervisor import Cluster, Supervisor
from inference.tasks import queue_name

logger = logging.getLogger(__name__)

# A serving loop registers within seconds of its cluster's start (the model loads after that, with the
# heartbeat going); silent this long after a start, or after its last heartbeat, it is replaced.
LOOP_START_SECONDS = 30.0
# A loop that said it is loading a model is given this long: a load can keep the heartbeat from the database for a
# while (seen for 40 s on a first load just after an install), and replacing the cluster then only starts the load
# over.
LOAD_PATIENCE_SECONDS = 300.0


def end_orphans(hostname: str) -> int:
    """Mark the runs of this machine whose process is gone as stopped, and end their engine processes."""
    ended = 0
    gone = []
    for worker in Worker.objects.filter(hostname=hostname, stopped_at__isnull=True):
        try:
            if psutil.Process(worker.pid).create_time() <= worker.started_at.timestamp() + 1:
                continue  # still running
        except psutil.Error:
            pass
        for pid, created in worker.engine_pids or []:
            try:
                proc = psutil.Process(pid)
                if abs(proc.create_time() - created) < 1:
                    proc.terminate()
                    ended += 1
            except psutil.Error:
                continue
        gone.append(worker.pk)
    if gone:
        workers_stop(worker_ids=gone)
    return ended


class LoopWatch:
    """Is the serving loop of this worker's cluster alive? It runs in one of the cluster's processes, reports
    through its Worker row, and must have done so lately. Time without the database does not count: the loop
    cannot report then, and rides the outage out with its work in flight."""

    def __init__(self, *, name: str, hostname: str) -> None:
        self.name = name
        self.hostname = hostname
        self.last_seen = time.monotonic()
        self.cluster_pid: int | None = None
        self.database_back: float | None = None
        self.patient_since: datetime | None = None  # the load the watch last waited for

    def __call__(self, cluster: Cluster) -> str | None:
        now = time.monotonic()
        if cluster.pid != self.cluster_pid:  # a new cluster: give its loop time to start
            self.cluster_pid, self.last_seen = cluster.pid, now
        try:
            end_orphans(self.hostname)
            reported = (
                Worker.objects.alive().filter(name=self.name, hostname=self.hostname, pid__in=cluster.pids()).exists()
            )
        except DatabaseError:
            self.database_back = None
            raise
        if self.database_back is None:  # the database answers again: the loop needs a heartbeat to say so
            self.database_back = now
            self.last_seen = max(self.last_seen, now)
        if reported:
            self.last_seen = now
        elif now - self.last_seen > max(LOOP_START_SECONDS, settings.BATCHSERVER_WORKER_STALE_SECONDS):
            silence = f"the serving loop has not reported for {now - self.last_seen:.0f} s"
            loading = (
                Worker.objects.filter(
                    name=self.name, hostname=self.hostname, pid__in=cluster.pids(), stopped_at__isnull=True
                )
                .exclude(loading_since=None)
                .values_list("loading_model", "loading_since")
                .first()
            )
            if loading is None:
                return silence
            model, since = loading
            loading_for = (timezone.now() - since).total_seconds()
            if loading_for > LOAD_PATIENCE_SECONDS:
                return f"{silence}; it has been loading {model} for {loading_for:.0f} s"
            if self.patient_since != since:
                self.patient_since = since
                logger.warning(
                    "worker %s: %s while it loads %s (for %.0f s); it is given up to %.0f s to load",
                    self.name,
                    silence,
                    model,
                    loading_for,
                    LOAD_PATIENCE_SECONDS,
                )
        return None


class Command(BaseCommand):
    help = "Run an inference worker: a supervised django-q2 cluster with one process that keeps an engine loaded."

    def add_arguments(self, parser):
        parser.add_argument(
            "--name",
            default=settings.BATCHSERVER_WORKER_NAME,
            help="Worker name (default: BATCHSERVER_WORKER_NAME, else the host name). "
            "Give each worker on one machine its own, e.g. gpu0, gpu1.",
        )
        parser.add_argument(
            "--models",
            default=",".join(settings.BATCHSERVER_WORKER_MODELS),
            help="Comma-separated served model names (default: BATCHSERVER_WORKER_MODELS).",
        )

    def handle(self, *args, name: str, models: str, **options):
        unknown = [m for m in models.split(",") if m not in settings.BATCHSERVER_MODELS]
        if unknown:
            raise CommandError(f"Unknown models {unknown}; configured: {sorted(settings.BATCHSERVER_MODELS)}.")
        hostname = socket.gethostname()
        queue = queue_name(name)

        def seed() -> None:
            from django_q.brokers import get_broker
            from django_q.tasks import async_task

            ended = end_orphans(hostname)
            if ended:
                logger.warning("ended %s engine processes left by a worker that died", ended)
            get_broker(queue).purge_queue()  # serving tasks of a cluster that is gone
            async_task("inference.tasks.serve", cluster=queue, task_name=f"serve {name}")

        env = {
            **os.environ,
            "Q_CLUSTER_NAME": queue,
            "BATCHSERVER_WORKER_NAME": name,
            "BATCHSERVER_WORKER_MODELS": models,
        }
        self.stdout.write(f"Worker '{name}' serving {models} (django-q2 cluster {queue}).")
        supervisor = Supervisor(
            name=f"worker {name}",
            env=env,
            workers=1,
            signal_workers=True,
            auxiliary_matter=False,  # a dead monitor or pusher is django-q2's to replace: the models stay loaded
            tick=LoopWatch(name=name, hostname=hostname),
            on_start=seed,
        )
        raise SystemExit(supervisor.run())
