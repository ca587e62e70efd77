"""python manage.py runcluster: a django-q2 cluster (as `manage.py qcluster`) that stops when its parent goes
away. Started by `manage.py runtasks` and `manage.py runworker`, which supervise it (batchserver/supervisor.py);
not meant to be run by hand. The cluster's name comes from Q_CLUSTER_NAME, as for qcluster."""

from __future__ import annotations

import logging
import os
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from batchserver.supervisor import STOP_SECONDS, stop_process_group, watch_parent

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run a django-q2 cluster that stops when its supervisor (runtasks, runworker) goes away."

    def handle(self, *args, **options):
        from django_q.cluster import Cluster

        if not settings.SECRET_KEY:  # django-q2 signs tasks with it
            raise CommandError("SECRET_KEY is empty: set DJANGO_SECRET_KEY (the same on every machine).")
        cluster = Cluster()

        def stop_without_supervisor() -> None:
            logger.warning("runcluster %s: the supervisor is gone; stopping", os.getpid())
            # Our own task workers first (a serving loop gives its work back), then django-q2's orderly stop;
            # whatever is left when the deadline passes is killed with the whole process group.
            deadline = threading.Timer(STOP_SECONDS, lambda: os.killpg(0, signal.SIGKILL))
            deadline.daemon = True
            deadline.start()
            stop_process_group(
                os.getpgid(0), main_pid=os.getpid(), signal_workers=settings.CLUSTER_STOP_SIGNALS_WORKERS, wait=False
            )

        watch_parent(stop_without_supervisor)
        cluster.start()
        while cluster.sentinel is not None and cluster.sentinel.is_alive():
            cluster.sentinel.join(0.5)
