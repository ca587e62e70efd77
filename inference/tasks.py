"""django-q2 tasks of an inference worker's own cluster (queue inference-<worker name>)."""

from __future__ import annotations

import logging
import os
import re
import time

from django.conf import settings

logger = logging.getLogger(__name__)
RESTART_PAUSE_SECONDS = 5


def queue_name(worker_name: str) -> str:
    """The django-q2 cluster (and queue) of one worker."""
    return "inference-" + re.sub(r"[^A-Za-z0-9_.-]", "-", worker_name)


def serve() -> str:
    """Run the worker's serving loop for one slice, then queue the next slice.

    The loop and its engine stay in this process between slices; slices only keep each django-q2 task
    shorter than the cluster's timeout. Delivered twice, a slice is harmless: the loop is one per process.
    """
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from inference.worker import get_loop

    loop = get_loop()
    try:
        reason = loop.run(seconds=settings.BATCHSERVER_WORKER_SLICE_SECONDS)
    except Exception:
        # A failure must not end the worker: django-q2 would not queue the next slice. Give the work back,
        # pause, and go on; the log has the error.
        logger.exception("the serving loop of worker %s failed; it starts again in %s s", loop.worker_name,
                         RESTART_PAUSE_SECONDS)
        loop.recover()
        time.sleep(RESTART_PAUSE_SECONDS)
        reason = "restarted after an error"
    if reason == "stopped":
        loop.shutdown()
        logger.info("worker %s stopped", loop.worker_name)
        os._exit(0)
    queue = queue_name(loop.worker_name)
    # This task's own row stays queued until it is acknowledged: one row means no successor is queued yet.
    if OrmQ.objects.filter(key=queue).count() <= 1:
        async_task("inference.tasks.serve", cluster=queue, task_name=f"serve {loop.worker_name}")
    return reason
