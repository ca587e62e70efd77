"""GET /v1/batches/{id}/events: the batch object as server-sent events, each time its status or request_counts
change, until a final status.

- Every status is sent, however briefly the batch held it: each transition records the batch object it produced
  (a BatchTransition, written in the transition's transaction by `record_transition`), and the batch's row gives
  the progress in between.
- One thread per web server process polls the database for the batches its streams follow (`BatchWatch`, every
  POLL_SECONDS, on one connection): a stream holds no database connection, and the database does the same work
  for one stream of a batch or a hundred.
- An open stream holds a thread of the web server: a process keeps at most `batchserver.streams.slots` of them
  open. A client that finds none free gets the events due and the stream closes at once: it comes back after
  RETRY_MS, as every stream's client does after BATCHSERVER_EVENT_STREAM_SECONDS. A stream also ends as soon as
  its client goes away.
- An event's id (`<transition>-<completed>-<failed>`) names the state it sent: a client that reconnects with it as
  Last-Event-ID gets only what changed since, and a 204 (which makes EventSource stop) once it has the final state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from batches_api import selectors
from batches_api.models import Batch, BatchTransition
from batches_api.serializers import batch_json
from batchserver.streams import slots

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # progress once a second: enough for a page, and few wake-ups beside the engines
KEEPALIVE_SECONDS = 15.0
# Longer than gunicorn's keep-alive (2 s): a client coming back finds its idle connection closed and opens a new
# one, rather than sending on a connection that the server closes at that very moment.
RETRY_MS = 3000


# ------------------------------------------------------------------------------------------------ recording
def record_transition(sender, *, batch: Batch, status: str, **kwargs) -> None:
    """Receiver of batch_status_changed, inside the transition's transaction: the batch object it produced, as
    GET /v1/batches/{id} will answer once it commits."""
    BatchTransition.objects.create(batch=batch, status=status, body=batch_json(batch))


# ------------------------------------------------------------------------------------------------ states
@dataclass(frozen=True)
class Snapshot:
    """The batch object at one moment, and what names it: the last transition it includes (0: none yet) and its
    request counts. Within one transition the counts only grow."""

    transition: int
    status: str
    completed: int
    failed: int
    body: str

    @property
    def event_id(self) -> str:
        return f"{self.transition}-{self.completed}-{self.failed}"

    @property
    def ended(self) -> int:
        return self.completed + self.failed

    @property
    def is_final(self) -> bool:
        return self.status in Batch.FINAL_STATUSES

    def is_after(self, other: Snapshot) -> bool:
        return (self.transition, self.ended) > (other.transition, other.ended)

    @classmethod
    def of_transition(cls, transition: BatchTransition) -> Snapshot:
        counts = json.loads(transition.body)["request_counts"]
        return cls(transition.id, transition.status, counts["completed"], counts["failed"], transition.body)


@dataclass(frozen=True)
class BatchState:
    """What a stream needs to know of a batch: the object now, and every transition it went through."""

    current: Snapshot
    transitions: tuple[Snapshot, ...]  # oldest first

    def known(self, event_id: str) -> Snapshot | None:
        """The state that `event_id` names, if it is one of this batch's: a transition, or a moment after one."""
        try:
            transition, completed, failed = (int(part) for part in event_id.split("-"))
        except ValueError:
            return None
        if transition != 0 and transition not in {t.transition for t in self.transitions}:
            return None
        status = next((t.status for t in self.transitions if t.transition == transition), Batch.Status.VALIDATING)
        return Snapshot(transition, status, completed, failed, "")

    def since(self, sent: Snapshot | None) -> list[Snapshot]:
        """What a client that was last sent `sent` (None: nothing yet) is due now, oldest first: every transition
        after it, then the object now if it moved on since the last of them."""
        if sent is None:
            return [self.current]
        due = [t for t in self.transitions if t.transition > sent.transition]
        last = due[-1] if due else sent
        if self.current.transition == last.transition and self.current.ended > last.ended:
            due.append(self.current)
        return due


def read_states(batch_ids: list[str], known: dict[str, BatchState]) -> dict[str, BatchState]:
    """The state of each batch, reading only the transitions that `known` does not hold yet."""
    batches = selectors.batches_with_last_transition(batch_ids)
    had = {batch.id: known[batch.id].transitions if batch.id in known else () for batch, _ in batches}
    read_up_to = {batch_id: transitions[-1].transition if transitions else 0 for batch_id, transitions in had.items()}
    new: dict[str, list[Snapshot]] = {}
    for transition in selectors.transitions_between(
        {
            batch.id: (read_up_to[batch.id], last_transition)
            for batch, last_transition in batches
            if last_transition > read_up_to[batch.id]
        }
    ):
        new.setdefault(transition.batch_id, []).append(Snapshot.of_transition(transition))
    return {
        batch.id: BatchState(
            current=Snapshot(
                last_transition, batch.status, batch.completed_requests, batch.failed_requests, batch_json(batch)
            ),
            transitions=(*had[batch.id], *new.get(batch.id, ())),
        )
        for batch, last_transition in batches
    }


# ------------------------------------------------------------------------------------------------ the watch
class BatchWatch:
    """The batches that this process's streams follow, polled by one thread of its own every POLL_SECONDS, on
    one database connection (closed while nobody follows anything). Streams wait for its polls."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._followers: Counter[str] = Counter()
        self._states: dict[str, BatchState] = {}
        self._polls = 0
        self._thread: threading.Thread | None = None

    def follow(self, batch_id: str, state: BatchState) -> None:
        with self._changed:
            self._followers[batch_id] += 1
            self._keep(batch_id, state)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="batch-watch", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def unfollow(self, batch_id: str) -> None:
        with self._changed:
            self._followers[batch_id] -= 1
            if self._followers[batch_id] <= 0:
                del self._followers[batch_id]
                self._states.pop(batch_id, None)

    def wait(self, batch_id: str, seen: int, timeout: float) -> tuple[int, BatchState | None]:
        """Wait (at most `timeout` seconds) for a poll after poll number `seen`; returns the number of the last
        poll and the batch's state."""
        with self._changed:
            self._changed.wait_for(lambda: self._polls > seen, timeout)
            return self._polls, self._states.get(batch_id)

    def _keep(self, batch_id: str, state: BatchState) -> None:
        """Keep the newest of two states (a stream that starts may have read a newer one than the last poll)."""
        kept = self._states.get(batch_id)
        if kept is None or not kept.current.is_after(state.current):
            self._states[batch_id] = state

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._followers:
                    connection.close()
                    self._changed.wait()
                batch_ids = list(self._followers)
                known = dict(self._states)
            try:
                states = read_states(batch_ids, known)
            except Exception:  # the database blinked: the streams wait for the next poll
                logger.warning("polling %s followed batches failed", len(batch_ids), exc_info=True)
                connection.close()
                states = {}
            with self._changed:
                for batch_id, state in states.items():
                    if batch_id in self._followers:
                        self._keep(batch_id, state)
                self._polls += 1
                self._changed.notify_all()
            time.sleep(POLL_SECONDS)


watch = BatchWatch()


# ------------------------------------------------------------------------------------------------ streams
def _event(snapshot: Snapshot) -> bytes:
    return f"id: {snapshot.event_id}\ndata: {snapshot.body}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"


def open_stream(*, batch_id: str, last_event_id: str | None, client_gone: Callable[[], bool]) -> Iterator[bytes] | None:
    """The events of a batch for one client, from the state it names by `last_event_id` (None, or a state that is
    not this batch's: from the object now). None when that client has the final state already: nothing more
    will come."""
    state = read_states([batch_id], {})[batch_id]
    sent = state.known(last_event_id) if last_event_id else None
    due = state.since(sent)
    if sent is not None and not due and state.current.is_final:
        return None
    return _stream(batch_id, state, due, due[-1] if due else sent, client_gone)


def _stream(
    batch_id: str, state: BatchState, due: list[Snapshot], sent: Snapshot | None, client_gone: Callable[[], bool]
) -> Iterator[bytes]:
    """The events due first; then, if the batch is not final and a slot is free here, what comes next."""
    yield f"retry: {RETRY_MS}\n\n".encode() + b"".join(map(_event, due))
    if state.current.is_final or not slots.acquire():
        return  # the final state is sent; or no stream is free here: the client comes back after RETRY_MS
    try:
        connection.close()  # the request's own: the watch reads for the stream
        watch.follow(batch_id, state)
        try:
            yield from _follow(batch_id, sent, client_gone)
        finally:
            watch.unfollow(batch_id)
    finally:
        slots.release()


def _follow(batch_id: str, sent: Snapshot | None, client_gone: Callable[[], bool]) -> Iterator[bytes]:
    """Send what each poll of the watch brings, a keep-alive comment when nothing did for KEEPALIVE_SECONDS; end
    after the final state, when the client goes away, or after BATCHSERVER_EVENT_STREAM_SECONDS."""
    started = last_write = time.monotonic()
    poll = 0
    while time.monotonic() - started < settings.BATCHSERVER_EVENT_STREAM_SECONDS:
        poll, state = watch.wait(batch_id, poll, timeout=POLL_SECONDS * 4)
        if client_gone():
            return
        due = state.since(sent) if state is not None else []
        if due:
            yield b"".join(map(_event, due))
            sent, last_write = due[-1], time.monotonic()
            if sent.is_final:
                return
        elif time.monotonic() - last_write >= KEEPALIVE_SECONDS:
            yield KEEPALIVE
            last_write = time.monotonic()
