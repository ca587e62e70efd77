"""Short jobs run soon by the process that asked for them, on a few threads of its own: the validation of a small
batch input right after its batch is created (in the web process), the finalizing of a batch as its worker sends
its last results. It saves the task queue's round trip; it promises nothing more. Each job is a claimed,
idempotent service call, and a job this process never runs (it stopped, it died) is found by the sweep of
`manage.py runtasks` and run by the task cluster."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections

logger = logging.getLogger(__name__)

THREADS = 2

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pid = 0


def soon(job: Callable[..., object], **kwargs: object) -> None:
    """Run `job(**kwargs)` on one of this process's background threads."""
    global _pool, _pid
    with _lock:
        if _pool is None or _pid != os.getpid():  # none yet, or a copy made by fork: its threads did not come along
            _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="background")
            _pid = os.getpid()
        pool = _pool
    pool.submit(_run, job, kwargs)


def _run(job: Callable[..., object], kwargs: dict) -> None:
    close_old_connections()
    try:
        job(**kwargs)
    except Exception:  # the sweep finds the job undone and has the task cluster run it
        logger.exception("background job %s(%r) failed; the sweep will run it again", job.__name__, kwargs)
    finally:
        close_old_connections()
