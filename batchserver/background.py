"""Short jobs run soon by the process that asked for them: the validation of a small batch input right after its
batch is created (in the web process, by the thread that answered, once its response is sent), the finalizing of a
batch as its worker sends its last results (on a few threads of the worker's own). It saves the task queue's round
trip; it promises nothing more. Each job is a claimed, idempotent service call, and a job this process never runs
(it stopped, it died) is found by the sweep of `manage.py runtasks` and run by the task cluster."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.core.signals import request_finished, request_started
from django.db import close_old_connections

logger = logging.getLogger(__name__)

THREADS = 2

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pid = 0
_request = threading.local()  # .after: the jobs to run once the response this thread is sending has gone


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


def after_response(job: Callable[..., object], **kwargs: object) -> None:
    """Run `job(**kwargs)` on this thread once the response to the request it is handling has been sent (Django's
    request_finished), or, outside a request, on a background thread (`soon`).

    A job run this way costs its request's thread the time it takes, before that thread takes its next request: when
    requests come faster than the process keeps up with, the jobs they asked for are not left behind them (on
    background threads, which the interpreter gives a share of its time no larger than any request thread's)."""
    jobs = getattr(_request, "after", None)
    if jobs is None:
        soon(job, **kwargs)
    else:
        jobs.append((job, kwargs))


def _request_started(**_kwargs) -> None:
    if getattr(_request, "after", None) is None:  # (jobs of a request whose response was never closed stay)
        _request.after = []


def _request_finished(**_kwargs) -> None:
    jobs, _request.after = getattr(_request, "after", None) or [], None
    for job, kwargs in jobs:
        _run(job, kwargs)


request_started.connect(_request_started, dispatch_uid="batchserver.background")
request_finished.connect(_request_finished, dispatch_uid="batchserver.background")
