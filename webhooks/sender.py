"""The fast lane: in the task cluster's processes, a delivery is also sent right after the transition that raised
it commits, by a few background threads of the process that made the transition (usually the finalizing job),
instead of only waiting for its queued task behind every validation and finalizing job in the one FIFO queue.
(Measured with bench/webhooks.py: 1,000 batches finishing in a burst waited 22 s at the median, 66 s at p99.)

The queued task stays the guarantee: whichever claims the delivery first sends it and the other does nothing.
A thread that dies mid-send leaves a claim that lapses, and the sweep queues the delivery again. When the lane is
full (receivers that time out), deliveries simply wait for their task."""

from __future__ import annotations

import logging
import os
import queue
import threading

from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

THREADS = 4
BACKLOG = 256


class FastLane:
    def __init__(self) -> None:
        self.pid: int | None = None
        self.lock = threading.Lock()
        self.pending: queue.Queue[str] = queue.Queue(BACKLOG)

    @staticmethod
    def enabled() -> bool:
        """Only in the processes of the task cluster (runtasks names them so): never in web processes, whose
        requests should not leave threads behind, nor in inference workers."""
        return os.environ.get("Q_CLUSTER_NAME") == settings.TASKS_CLUSTER

    def submit(self, delivery_ids: list[str]) -> None:
        if not self.enabled():
            return
        self._start()
        for delivery_id in delivery_ids:
            try:
                self.pending.put_nowait(delivery_id)
            except queue.Full:
                return  # their queued tasks send them

    def _start(self) -> None:
        # Threads do not survive a fork: a process forked from one that had them starts its own.
        if self.pid == os.getpid():
            return
        with self.lock:
            if self.pid == os.getpid():
                return
            self.pending = queue.Queue(BACKLOG)
            for number in range(THREADS):
                # Daemon threads: they never hold up the process's exit (an interrupted send's claim lapses).
                threading.Thread(
                    target=self._run, args=(self.pending,), name=f"webhook-sender-{number}", daemon=True
                ).start()
            self.pid = os.getpid()

    @staticmethod
    def _run(pending: queue.Queue[str]) -> None:
        from webhooks.services import delivery_send

        while True:
            delivery_id = pending.get()
            close_old_connections()
            try:
                delivery_send(delivery_id=delivery_id)
            except Exception:  # its queued task, or the sweep, tries again
                logger.exception("webhook %s: sending from the fast lane failed", delivery_id)
            finally:
                if pending.empty():
                    connection.close()  # idle: hold no database connection (one a thread would stay open)
                else:
                    close_old_connections()


fast_lane = FastLane()
