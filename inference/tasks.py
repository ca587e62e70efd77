"""The django-q2 task of an inference worker's own cluster (queue inference-<worker name>)."""

from __future__ import annotations

import re


def queue_name(worker_name: str) -> str:
    """The django-q2 cluster (and queue) of one worker."""
    return "inference-" + re.sub(r"[^A-Za-z0-9_.-]", "-", worker_name)


def serve() -> str:
    """Run the worker's serving loop in this process until the worker stops, then unload the engine.

    `manage.py runworker` seeds exactly one of these each time it starts the worker's cluster, and the
    cluster never delivers it again (retry is effectively infinite): a loop that dies is the supervisor's to
    replace, at once."""
    from inference.worker import get_loop

    loop = get_loop()
    if loop.running.is_set():
        return "already serving"
    reason = loop.serve()
    loop.shutdown()
    return reason
