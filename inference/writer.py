"""The serving loop's writer: persists finished requests on a thread of its own, so that a slow database (or a
flush of thousands of results) never holds up the claiming and feeding of the engines. Database errors are
retried until they pass; nothing handed to it is lost while the process lives."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass

from django.db import close_old_connections, connection

from batches_api import services
from batches_api.services import Outcome

logger = logging.getLogger(__name__)

RETRY_PAUSE_SECONDS = 1.0


@dataclass
class Results:
    """What the loop decided about a round of finished requests."""

    worker_id: int
    outcomes: list[Outcome]
    clean: list[int]  # given back without counting a try
    failed: list[int]  # given back, the try counted
    batch_ids: set[str]  # the batches they belong to

    @property
    def size(self) -> int:
        return len(self.outcomes) + len(self.clean) + len(self.failed)


@dataclass
class Written:
    batch_ids: set[str]
    output_tokens: int


class ResultWriter:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Results | None] = queue.SimpleQueue()
        self.written: queue.SimpleQueue[Written] = queue.SimpleQueue()  # read by the loop: batches to finalize
        self._pending = 0
        self._batches: Counter[str] = Counter()  # batches with results handed over and not written yet
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name=f"writer-{name}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Requests handed over and not written yet."""
        return self._pending

    @property
    def pending_batch_ids(self) -> set[str]:
        """Batches with results handed over and not written yet: not finished as far as this worker knows."""
        with self._lock:
            return set(self._batches)

    def submit(self, results: Results) -> None:
        if not results.size:
            return
        with self._lock:
            self._pending += results.size
            self._batches.update(results.batch_ids)
            self._idle.clear()
        self._jobs.put(results)

    def drain(self, timeout: float) -> bool:
        """Wait until everything handed over is written (True), or `timeout` seconds."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                written = self._write(job)
                with self._lock:
                    self._pending -= job.size
                    self._batches.subtract(job.batch_ids)
                    for batch_id in job.batch_ids:
                        if self._batches[batch_id] <= 0:
                            del self._batches[batch_id]
                    if not self._pending:
                        self._idle.set()
                # Reported once it no longer counts as pending: the loop then sees the batch done, if it is.
                self.written.put(written)
        finally:
            connection.close()

    def _write(self, job: Results) -> Written:
        while True:
            try:
                written = (
                    services.requests_record(worker_id=job.worker_id, outcomes=job.outcomes) if job.outcomes else set()
                )
                if job.clean:
                    services.requests_release(worker_id=job.worker_id, request_ids=job.clean)
                if job.failed:
                    services.requests_release(worker_id=job.worker_id, request_ids=job.failed, failed=True)
            except Exception:
                logger.warning(
                    "writing %s results failed; retrying in %s s", job.size, RETRY_PAUSE_SECONDS, exc_info=True
                )
                close_old_connections()
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            return Written(
                batch_ids=job.batch_ids,
                output_tokens=sum(o.output_tokens for o in job.outcomes if o.request.id in written),
            )
