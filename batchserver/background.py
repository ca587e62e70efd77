"""Short jobs run soon by the process that asked for them: the validation of a small batch input right after its
batch is created (in the web process), the finalizing of a batch as its worker sends its last results. It saves the
task queue's round trip; it promises nothing more. Each job is a claimed, idempotent service call, and a job this
process never runs (it stopped, it died) is found by the sweep of `manage.py runtasks` and run by the task cluster."""

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
_queued = 0  # jobs given to the pool that have not ended yet
_request = threading.local()  # .after: the jobs to run once the response this thread is sending has gone


def soon(job: Callable[..., object], **kwargs: object) -> None:
    """Run `job(**kwargs)` on one of this process's background threads."""
    global _pool, _pid, _queued
    with _lock:
        if _pool is None or _pid != os.getpid():  # none yet, or a copy made by fork: its threads did not come along
            _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="background")
            _pid = os.getpid()
            _queued = 0
        pool = _pool
        _queued += 1
    pool.submit(_run, job, kwargs, True)


def soon_or_after_response(job: Callable[..., object], **kwargs: object) -> None:
    """Run `job(**kwargs)` on a background thread (`soon`) when one is free; when they are all busy and this thread
    is answering a request, on this thread once that response has been sent (Django's request_finished).

    Background threads get no larger share of the interpreter than any request thread: in a burst of requests that
    each ask for a job, jobs left to them fall ever further behind. The threads of those requests then do the
    excess themselves, each before it takes its next request, and the jobs keep pace with the requests. (A client
    that sends its next request on the same connection waits for that job too.)"""
    jobs = getattr(_request, "after", None)
    with _lock:
        busy = _pid == os.getpid() and _queued >= THREADS
    if jobs is not None and busy:
        jobs.append((job, kwargs))
    else:
        soon(job, **kwargs)


def _run(job: Callable[..., object], kwargs: dict, queued: bool = False) -> None:
    global _queued
    close_old_connections()
    try:
        job(**kwargs)
    except Exception:  # the sweep finds the job undone and has the task cluster run it
        logger.exception("background job %s(%r) failed; the sweep will run it again", job.__name__, kwargs)
    finally:
        close_old_connections()
        if queued:
            with _lock:
                _queued -= 1


def _request_started(**_kwargs) -> None:
    if getattr(_request, "after", None) is None:  # (jobs of a request whose response was never closed stay)
        _request.after = []


def _request_finished(**_kwargs) -> None:
    jobs, _request.after = getattr(_request, "after", None) or [], None
    for job, kwargs in jobs:
        _run(job, kwargs)


request_started.connect(_request_started, dispatch_uid="batchserver.background")
request_finished.connect(_request_finished, dispatch_uid="batchserver.background")
