"""python manage.py runworker: one inference worker, as a django-q2 cluster of its own.

It starts `manage.py qcluster` for the worker's queue (Q_CLUSTER_NAME=inference-<name>), seeds that queue with
the serving task, and owns the stop: SIGTERM/SIGINT make the serving loop give its work back and unload the
engine, then the cluster stops; whatever is left after 10 s is killed. On start it also ends engine processes
left behind by a worker of this machine that was killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from inference.models import Worker
from inference.tasks import queue_name

STOP_SECONDS = 9.0


def end_orphans(hostname: str) -> int:
    """Mark workers of this machine whose process is gone as stopped, and end their engine processes."""
    ended = 0
    for worker in Worker.objects.filter(hostname=hostname, stopped_at__isnull=True):
        if psutil.pid_exists(worker.pid):
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
        Worker.objects.filter(pk=worker.pk).update(stopped_at=timezone.now())
    return ended


class Command(BaseCommand):
    help = "Run an inference worker: a django-q2 cluster with one process that keeps an engine loaded."

    def add_arguments(self, parser):
        parser.add_argument("--name", default=settings.BATCHSERVER_WORKER_NAME,
                            help="Worker name (default: BATCHSERVER_WORKER_NAME, else the host name). "
                                 "Give each worker on one machine its own, e.g. gpu0, gpu1.")
        parser.add_argument("--models", default=",".join(settings.BATCHSERVER_WORKER_MODELS),
                            help="Comma-separated served model names (default: BATCHSERVER_WORKER_MODELS).")

    def handle(self, *args, name: str, models: str, **options):
        from django_q.models import OrmQ
        from django_q.tasks import async_task

        unknown = [m for m in models.split(",") if m not in settings.BATCHSERVER_MODELS]
        if unknown:
            raise CommandError(f"Unknown models {unknown}; configured: {sorted(settings.BATCHSERVER_MODELS)}.")
        hostname = socket.gethostname()
        ended = end_orphans(hostname)
        if ended:
            self.stderr.write(f"Ended {ended} engine processes left by a worker that was killed.")
        queue = queue_name(name)
        OrmQ.objects.filter(key=queue).delete()  # slices of a previous run of this worker
        async_task("inference.tasks.serve", cluster=queue, task_name=f"serve {name}")
        env = {**os.environ, "Q_CLUSTER_NAME": queue, "BATCHSERVER_WORKER_NAME": name,
               "BATCHSERVER_WORKER_MODELS": models}
        cluster = subprocess.Popen([sys.executable, sys.argv[0], "qcluster"], env=env, start_new_session=True)
        self.stdout.write(f"Worker '{name}' serving {models} (django-q2 cluster {queue}, pid {cluster.pid}).")

        def stop(signum, frame):
            self._stop(cluster, hostname)
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        code = cluster.wait()
        sys.exit(code)

    def _stop(self, cluster: subprocess.Popen, hostname: str) -> None:
        """The serving loop first (it gives its work back and unloads the engine), then the cluster."""
        try:
            tree = [cluster.pid] + [p.pid for p in psutil.Process(cluster.pid).children(recursive=True)]
        except psutil.Error:
            tree = [cluster.pid]
        loops = Worker.objects.filter(hostname=hostname, pid__in=tree, stopped_at__isnull=True).values_list(
            "pid", flat=True)
        for pid in [*loops, cluster.pid]:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_SECONDS
        procs = []
        for pid in tree:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
        for proc in procs:
            try:
                procs.extend(proc.children(recursive=True))
            except psutil.Error:
                pass
        gone, alive = psutil.wait_procs(procs, timeout=max(0.1, deadline - time.monotonic()))
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(cluster.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
