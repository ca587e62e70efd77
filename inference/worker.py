"""The serving loop of an inference worker: claims requests, keeps its engines full, persists results.

One loop per worker process, hosting the warm engines of the models it serves (inference/engines/host.py) within
a memory budget (inference/budget.py), run by the serving task of the worker's own django-q2 cluster
(inference/tasks.py) until the worker stops. Every write goes through batches_api.services: requests are
claimed with a conditional update (SKIP LOCKED on PostgreSQL), results are written only while this worker still
holds the request, and a worker whose heartbeat stops has its requests handed out again. The loop rides out
database outages with its in-flight work kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import msgspec
import psutil
from django.conf import settings
from django.core.files import File as DjangoFile
from django.db import DatabaseError, close_old_connections, connection, connections
from django.db.models import Q
from django.utils import timezone

from batches_api import services
from batches_api.models import Batch, BatchRequest, Worker
from batches_api.services import ClaimedRequest, Outcome
from batchserver.ids import new_id
from files_api.models import File
from files_api.services import file_open
from inference.budget import Budget, model_spec
from inference.engines.base import EngineResponse
from inference.engines.host import get_host
from inference.models import EngineLoad
from inference.writer import Results, ResultWriter

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5  # results are written in small bulks about this often
CONTROL_SECONDS = 1.0  # how often cancellation and expiry of the batches being run are checked
BUSY_CLAIM_SECONDS = 0.5  # how often a worker with half-full engines looks for more work (a new batch waits no longer)
HEARTBEAT_SECONDS = 2.0
IDLE_POLL_SECONDS = 0.2
TOKENS_PER_SECOND_WINDOW = 60.0  # the window of the throughput a worker reports
ABORT_WAIT_SECONDS = 1.0  # on stop, how long aborted requests may take to come back before they are given back
WRITER_DRAIN_SECONDS = 2.0  # on stop, how long the writer may take to write what it holds
WRITER_BACKLOG = 4  # the loop stops claiming while the writer holds this many engines' worth of results
RETRY_PAUSE_SECONDS = 1.0  # after a database error
RESTART_PAUSE_SECONDS = 5.0  # after any other error


class EngineDied(RuntimeError):
    """The engine's processes died while the request was in flight."""


@dataclass(slots=True)
class InFlight:
    request: ClaimedRequest
    model: str
    engine_request_id: str


@dataclass
class BatchInput:
    endpoint: str
    file_id: str
    handle: DjangoFile | None = None


@dataclass
class ModelState:
    """What the loop keeps per loaded model."""

    inflight: dict[int, InFlight] = field(default_factory=dict)
    quarantine: bool = False  # a quarantined group is in flight: nothing else is fed meanwhile
    draining: bool = False  # to be unloaded for another model once its requests are done
    last_used: float = 0.0


class ServingLoop:
    def __init__(self, *, worker_name: str, models: list[str]) -> None:
        self.worker_name = worker_name
        self.models = models
        self.max_inflight = settings.BATCHSERVER_WORKER_MAX_INFLIGHT
        self.host = get_host()
        self.budget = Budget.for_this_machine()
        self.worker: Worker | None = None
        self.state: dict[str, ModelState] = {}  # per loaded model
        # (request, response or exception) as each ends, put by the engines' threads; None wakes the loop up.
        self.done: queue.SimpleQueue[tuple[InFlight, EngineResponse | BaseException] | None] = queue.SimpleQueue()
        self.finished: list[tuple[InFlight, EngineResponse | BaseException]] = []
        self.aborting: set[int] = set()  # aborted (batch stopped, or the worker stops): given back, not recorded
        self.stop_requested = threading.Event()
        self.running = threading.Event()
        self.last_tick = time.monotonic()
        self.loading = False  # a model load may take minutes: the heartbeat goes on meanwhile
        self.tokens: deque[tuple[float, int]] = deque()
        self._heartbeat: threading.Thread | None = None
        self.writer = ResultWriter(worker_name)
        self._inputs: dict[str, BatchInput] = {}
        self._finalize_asked: set[str] = set()
        self.full_with_work_waiting = False  # a model's engine is full while it has work waiting (see _fill)

    @property
    def worker_id(self) -> int:
        """The id of this worker's row. The heartbeat unsets self.worker when the row is marked stopped: the
        loop then starts over, recovers and registers again."""
        worker = self.worker
        if worker is None:
            raise RuntimeError(f"worker {self.worker_name} was marked stopped while it runs: it registers again")
        return worker.pk

    @property
    def inflight(self) -> list[InFlight]:
        return [item for state in self.state.values() for item in state.inflight.values()]

    # ------------------------------------------------------------------------------------------ lifecycle
    def register(self) -> Worker:
        if self.worker is None:
            self.worker = services.worker_register(
                name=self.worker_name, hostname=socket.gethostname(), pid=os.getpid(), served_models=self.models
            )
            logger.info("worker %s (%s) serving %s", self.worker_name, self.worker.pk, ", ".join(self.models))
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
            self._heartbeat.start()
        return self.worker

    def _beat(self) -> None:
        """Renew the heartbeat while the loop is ticking; a hung loop stops beating and loses its work."""
        stale = settings.BATCHSERVER_WORKER_STALE_SECONDS
        while not self.stop_requested.is_set():
            worker = self.worker
            if worker is not None and (self.loading or time.monotonic() - self.last_tick < stale / 2):
                try:
                    inflight = self.inflight
                    if not services.worker_heartbeat(
                        worker_id=worker.pk,
                        inflight=len(inflight),
                        loaded_models=self.host.loaded_models,
                        tokens_per_second=self.tokens_per_second(),
                        current_batches=sorted({item.request.batch_id for item in inflight}),
                    ):
                        logger.warning(
                            "worker %s was marked stopped while it runs: it registers again", self.worker_name
                        )
                        self.worker = None
                except Exception:  # the database may blink; the next beat tries again
                    logger.warning("heartbeat failed", exc_info=True)
                finally:
                    close_old_connections()
            self.stop_requested.wait(HEARTBEAT_SECONDS)
        connection.close()

    def tokens_per_second(self) -> float:
        horizon = time.monotonic() - TOKENS_PER_SECOND_WINDOW
        while self.tokens and self.tokens[0][0] < horizon:
            self.tokens.popleft()
        return round(sum(n for _, n in self.tokens) / TOKENS_PER_SECOND_WINDOW, 2)

    def request_stop(self, *_args) -> None:
        self.stop_requested.set()
        self.done.put(None)  # wake the loop if it sleeps

    def serve(self) -> str:
        """Load the models to preload, then serve until a stop is requested. A database error is waited out
        with the work in flight kept; any other error gives the work back, and the loop starts over after a
        pause."""
        self.running.set()
        try:
            while not self.stop_requested.is_set():
                try:
                    if self.worker is None:
                        self.recover()  # new, or marked stopped: what it held is no longer its own
                        self.register()
                        self._preload()
                    self._run()
                except DatabaseError:
                    logger.warning(
                        "worker %s: database error; retrying in %s s",
                        self.worker_name,
                        RETRY_PAUSE_SECONDS,
                        exc_info=True,
                    )
                    for conn in connections.all():
                        conn.close_if_unusable_or_obsolete()
                    self.stop_requested.wait(RETRY_PAUSE_SECONDS)
                except Exception:
                    logger.exception(
                        "the serving loop of worker %s failed; it starts again in %s s",
                        self.worker_name,
                        RESTART_PAUSE_SECONDS,
                    )
                    self.recover()
                    self.stop_requested.wait(RESTART_PAUSE_SECONDS)
            self._give_back_all()
            return "stopped"
        finally:
            self.running.clear()
            close_old_connections()

    def _preload(self) -> None:
        """Load the models to keep warm before the first batch arrives (BATCHSERVER_WORKER_PRELOAD), as many as
        the budget holds, then report the worker ready."""
        started = time.monotonic()
        for model in self.budget.preload(settings.BATCHSERVER_WORKER_PRELOAD, self.models):
            if self.stop_requested.is_set():
                return
            if model not in self.host.loaded_models:
                self._load(model)
        services.worker_ready(worker_id=self.worker_id)
        logger.info(
            "worker %s ready in %.1f s: %s loaded",
            self.worker_name,
            time.monotonic() - started,
            ", ".join(self.host.loaded_models) or "no model",
        )

    # ------------------------------------------------------------------------------------------ the loop
    def _run(self) -> None:
        next_flush = next_control = next_claim = 0.0
        found_work = False
        while not self.stop_requested.is_set() and self.worker is not None:
            now = self.last_tick = time.monotonic()
            if self.finished and (now >= next_flush or not self.inflight):
                self._flush()
                next_flush = now + FLUSH_SECONDS
            self._settle()
            inflight = len(self.inflight)
            if inflight and now >= next_control:
                self._control()
                next_control = now + CONTROL_SECONDS
            low = inflight <= self.max_inflight // 2
            # Refill at once when the engines run half empty while there is work; otherwise now and then.
            if now >= next_claim or (found_work and low):
                # Work found: claimed now, or waiting for the room the engines will make as their requests end.
                found_work = bool(self._fill()) or self.full_with_work_waiting
                busy = len(self.inflight) > self.max_inflight // 2
                next_claim = now + (BUSY_CLAIM_SECONDS if busy else 0.0 if found_work else IDLE_POLL_SECONDS)
            # Sleep until a result arrives (or a stop), or the next timer is due: on a small machine every
            # wake-up of ours is CPU taken from the engines.
            far = now + 3600
            timers = [next_claim, next_flush if self.finished else far, next_control if inflight else far]
            self._collect(timeout=max(0.0, min(timers) - time.monotonic()))

    def _collect(self, timeout: float) -> None:
        try:
            ended = self.done.get(timeout=timeout) if timeout else self.done.get_nowait()
        except queue.Empty:
            return
        while True:
            if ended is not None:  # None: request_stop's wake-up call
                item = ended[0]
                state = self.state.get(item.model)
                if state is not None and state.inflight.pop(item.request.id, None) is not None:
                    self.finished.append(ended)
                    if not state.inflight:
                        state.quarantine = False
            try:
                ended = self.done.get_nowait()
            except queue.Empty:
                break
        self._bury_dead_engines()

    def _bury_dead_engines(self) -> None:
        """Every loaded model whose engine died, whether or not it has requests in flight (the last of them may
        have failed with the engine already): a dead engine is never fed."""
        for model in [m for m in self.state if self.host.engine_dead(m)]:
            self._engine_died(model)

    def _engine_died(self, model: str) -> None:
        """A model's engine processes died (killed, out of memory): everything in flight failed with them. The
        requests go back with the try counted (one of them may be what killed it), and the model is loaded
        again when it has work."""
        state = self.state.pop(model)
        logger.error(
            "worker %s: the engine of %s died; %s requests in flight go back, the model is loaded again",
            self.worker_name,
            model,
            len(state.inflight),
        )
        try:
            self.host.unload(model)
        except Exception:
            logger.exception("unloading the dead engine of %s failed", model)
        # Requests that failed just before were failed by the death too.
        self.finished = [
            (item, EngineDied() if item.model == model and isinstance(result, BaseException) else result)
            for item, result in self.finished
        ]
        self.finished.extend((item, EngineDied()) for item in state.inflight.values())

    # ------------------------------------------------------------------------------------------ claiming
    def _fill(self) -> int:
        """Feed every loaded model that has work, the model whose oldest batch waits longest first; load a model
        that has work when it fits the budget, unloading idle models (least recently used first) to make room.
        When nothing can be unloaded, the models with newer work stop taking more until they drain."""
        self._bury_dead_engines()
        with_work = services.models_with_work(self.models)
        for state in self.state.values():
            state.draining = False
        self.full_with_work_waiting = any(
            len(self.state[m].inflight) >= self.max_inflight for m in with_work if m in self.state
        )
        claimed = 0
        for position, model in enumerate(with_work):
            if model not in self.state:
                if not self._make_room(model, with_work):
                    for loaded, state in self.state.items():
                        if loaded not in with_work[:position]:
                            state.draining = True
                    break
                self._load(model)
            claimed += self._claim(model)
        return claimed

    def _make_room(self, model: str, with_work: list[str]) -> bool:
        """Whether `model` can be loaded now, after unloading idle models, least recently used first."""
        while not self.budget.fits(model, self.host.loaded_models):
            idle = [m for m in self.host.loaded_models if not self.state.get(m, ModelState()).inflight]
            if not idle:
                return False
            victim = min(idle, key=lambda m: (m in with_work, self.state.get(m, ModelState()).last_used))
            logger.info("worker %s unloads %s to load %s", self.worker_name, victim, model)
            self.state.pop(victim, None)
            self.host.unload(victim)
            Worker.objects.filter(pk=self.worker_id).update(loaded_models=self.host.loaded_models)
        return True

    def _claim(self, model: str) -> int:
        state = self.state[model]
        if state.quarantine or state.draining or self.writer.pending > WRITER_BACKLOG * self.max_inflight:
            return 0
        level = services.quarantine_level(model)
        if level is not None:
            if state.inflight:
                return 0  # let the engine drain: a quarantined group runs with nothing else
            claimed = services.requests_claim(
                worker_id=self.worker_id, model=model, limit=services.QUARANTINE_GROUPS[level], tries=level
            )
            state.quarantine = bool(claimed)
        else:
            claimed = services.requests_claim(
                worker_id=self.worker_id, model=model, limit=self.max_inflight - len(state.inflight)
            )
        if claimed:
            state.last_used = time.monotonic()
            self._submit(model, claimed)
        return len(claimed)

    def _load(self, model: str) -> None:
        started = timezone.now()
        t0 = time.monotonic()
        logger.info("worker %s loading %s", self.worker_name, model)
        spec = model_spec(model)
        if spec.engine == "vllm":
            from inference.engines.vllm import engine_environment

            os.environ.update(engine_environment(settings.DATA_DIR / "cache"))
        self.loading = True
        services.worker_loading(worker_id=self.worker_id, model=model)
        try:
            self.host.ensure_loaded(spec)
        finally:
            self.loading = False
            self.last_tick = time.monotonic()
            with contextlib.suppress(Exception):  # what the load raised matters more; the next load resets it
                services.worker_loading(worker_id=self.worker_id, model="")
        self.state[model] = ModelState(last_used=time.monotonic())
        seconds = time.monotonic() - t0
        EngineLoad.objects.create(worker_id=self.worker_id, model=model, started_at=started, seconds=seconds)
        Worker.objects.filter(pk=self.worker_id).update(
            loaded_models=self.host.loaded_models, engine_pids=self._engine_pids()
        )
        logger.info("worker %s loaded %s in %.1f s", self.worker_name, model, seconds)

    def _engine_pids(self) -> list[list[float]]:
        """The engines' processes with their start times, so that a later cleanup never hits a reused pid."""
        pids = []
        for pid in self.host.child_pids():
            try:
                pids.append([pid, psutil.Process(pid).create_time()])
            except psutil.Error:
                continue
        return pids

    def _describe_batches(self, batch_ids: set[str]) -> None:
        unknown = batch_ids - set(self._inputs)
        for batch_id, endpoint, file_id in Batch.objects.filter(pk__in=unknown).values_list(
            "id", "endpoint", "input_file_id"
        ):
            self._inputs[batch_id] = BatchInput(endpoint=endpoint, file_id=file_id)

    def _submit(self, model: str, claimed: list[ClaimedRequest]) -> None:
        """Hand claimed requests to the model's engine, all at once; each comes back through self.done."""
        self._describe_batches({request.batch_id for request in claimed})
        inflight = self.state[model].inflight
        per_batch: dict[str, list[InFlight]] = {}
        for request in claimed:
            item = inflight[request.id] = InFlight(request=request, model=model, engine_request_id=new_id("", 12))
            per_batch.setdefault(request.batch_id, []).append(item)
        items = []
        for batch_id, group in per_batch.items():
            batch = self._inputs[batch_id]
            try:
                if batch.handle is None:
                    batch.handle = file_open(File.objects.get(pk=batch.file_id))
                bodies = read_bodies(batch.handle, [item.request for item in group])
            except Exception as exc:  # the input file cannot be read: none of these can run now
                bodies = [exc] * len(group)
            for item, body in zip(group, bodies, strict=True):
                if isinstance(body, Exception):
                    self.done.put((item, body))
                else:
                    items.append((item, item.engine_request_id, batch.endpoint, body, item.request.engine_priority))
        if items:
            self.host.submit_many(model, items, lambda item, result: self.done.put((item, result)))

    # ------------------------------------------------------------------------------------------ results
    def _flush(self) -> None:
        """Hand finished requests to the writer: it records them (only those this worker still holds) and gives
        back the aborted ones, on its own thread."""
        if not self.finished:
            return
        finished, self.finished = self.finished, []
        outcomes, clean, failed = self._sort_out(finished)
        self.aborting.difference_update(item.request.id for item, _ in finished)
        self.writer.submit(
            Results(
                worker_id=self.worker_id,
                outcomes=outcomes,
                clean=clean,
                failed=failed,
                batch_ids={item.request.batch_id for item, _ in finished},
            )
        )

    def _settle(self) -> None:
        """What the writer has written: count the tokens, and ask for finalizing the batches it completed."""
        batch_ids: set[str] = set()
        while True:
            try:
                written = self.writer.written.get_nowait()
            except queue.Empty:
                break
            batch_ids |= written.batch_ids
            self.tokens.append((time.monotonic(), written.output_tokens))
        if batch_ids:
            self._ask_finalize(batch_ids)

    def _sort_out(self, finished) -> tuple[list[Outcome], list[int], list[int]]:
        """Outcomes to record, requests to give back cleanly (aborted), and requests to give back with the try
        counted (the engine failed on them, with tries left)."""
        outcomes: list[Outcome] = []
        clean: list[int] = []
        failed: list[int] = []
        for item, result in finished:
            request = item.request
            if request.id in self.aborting or (isinstance(result, EngineResponse) and result.aborted):
                clean.append(request.id)
            elif isinstance(result, EngineResponse):
                outcomes.append(
                    Outcome(request=request, status_code=result.status_code, body=result.body, **result.usage())
                )
            elif self.stop_requested.is_set():
                clean.append(request.id)  # the engine was shut down under it: not the request's fault
            elif request.attempts >= services.MAX_ATTEMPTS:
                logger.error(
                    "request %s of batch %s failed on its last try, alone in the engine: %r",
                    request.custom_id,
                    request.batch_id,
                    result,
                )
                outcomes.append(
                    Outcome(
                        request=request,
                        not_run=services.POISONED if isinstance(result, EngineDied) else services.engine_failed(result),
                    )
                )
            else:
                logger.warning(
                    "request %s of batch %s failed in the engine (try %s of %s): %r",
                    request.custom_id,
                    request.batch_id,
                    request.attempts,
                    services.MAX_ATTEMPTS,
                    result,
                )
                failed.append(request.id)
        return outcomes, clean, failed

    def _ask_finalize(self, batch_ids: set[str]) -> None:
        """Finalize every batch that has nothing left for this worker to run or to write, on a background thread.
        A batch with results not written yet is not asked for: finalizing would find requests still held by this
        worker and leave the batch to the sweep, and this worker would not ask again."""
        busy = (
            {item.request.batch_id for item in self.inflight}
            | {item.request.batch_id for item, _ in self.finished}
            | self.writer.pending_batch_ids
        )
        quiet = batch_ids - busy
        if not quiet:
            return
        still_open = set(
            BatchRequest.objects.filter(batch_id__in=quiet).open().values_list("batch_id", flat=True).distinct()
        )
        stopped = set(
            Batch.objects.filter(pk__in=quiet)
            .filter(~Q(status=Batch.Status.IN_PROGRESS) | Q(expires_at__lte=timezone.now()))
            .values_list("id", flat=True)
        )
        for batch_id in quiet:
            if (batch_id not in still_open or batch_id in stopped) and batch_id not in self._finalize_asked:
                self._finalize_asked.add(batch_id)
                services.batch_enqueue_finalize(batch_id, force=True, here=True)  # no task queue's round trip
            if batch_id not in still_open:
                self._close_input(batch_id)

    def _close_input(self, batch_id: str) -> None:
        batch = self._inputs.pop(batch_id, None)
        if batch is not None and batch.handle is not None:
            batch.handle.close()

    # ------------------------------------------------------------------------------------------ control
    def _control(self) -> None:
        """Abort the requests of batches that were cancelled or ran out of time; they are given back and the
        batch's finalizing turns them into error lines."""
        inflight = self.inflight
        batch_ids = {item.request.batch_id for item in inflight}
        stopping = set(
            Batch.objects.filter(pk__in=batch_ids)
            .filter(~Q(status=Batch.Status.IN_PROGRESS) | Q(expires_at__lte=timezone.now()))
            .values_list("id", flat=True)
        )
        if not stopping:
            return
        doomed = [
            item for item in inflight if item.request.batch_id in stopping and item.request.id not in self.aborting
        ]
        if doomed:
            logger.info("aborting %s requests of stopped batches %s", len(doomed), ", ".join(sorted(stopping)))
            self.aborting.update(item.request.id for item in doomed)
            self._finalize_asked.difference_update(stopping)
            self._abort(doomed)

    def _abort(self, items: list[InFlight]) -> None:
        for model in {item.model for item in items}:
            self.host.abort(model, [item.engine_request_id for item in items if item.model == model])

    def _give_back_all(self) -> None:
        """On stop: abort what is in flight and give it back; record what already finished."""
        try:
            inflight = self.inflight
            if inflight:
                self.aborting.update(item.request.id for item in inflight)
                self._abort(inflight)
                deadline = time.monotonic() + ABORT_WAIT_SECONDS
                while self.inflight and time.monotonic() < deadline:
                    self._collect(timeout=0.1)
            if self.worker is not None:
                self._flush()
                services.requests_release(
                    worker_id=self.worker.pk, request_ids=[item.request.id for item in self.inflight]
                )
            if not self.writer.drain(WRITER_DRAIN_SECONDS):
                logger.error(
                    "worker %s stops with %s results not written: they run again elsewhere",
                    self.worker_name,
                    self.writer.pending,
                )
            for state in self.state.values():
                state.inflight.clear()
        except Exception:  # the database may be down: the work is handed out again once this worker is gone
            logger.exception("worker %s could not give back its work", self.worker_name)
        for batch_id in list(self._inputs):
            self._close_input(batch_id)

    def recover(self) -> None:
        """After an unexpected error: abort what is in flight and give back every request this worker holds,
        so that nothing waits on a loop that is starting over."""
        try:
            inflight = self.inflight
            if inflight:
                self._abort(inflight)
            for state in self.state.values():
                state.inflight.clear()
                state.quarantine = False
            self.finished.clear()
            self.aborting.clear()
            while not self.done.empty():
                self.done.get_nowait()
            if self.worker is not None:
                held = BatchRequest.objects.filter(worker=self.worker, status=BatchRequest.Status.RUNNING)
                services.requests_release(worker_id=self.worker.pk, request_ids=list(held.values_list("id", flat=True)))
        except Exception:
            logger.exception("could not give back the requests of worker %s", self.worker_name)
        finally:
            close_old_connections()

    def shutdown(self) -> None:
        """Stop for good: give back work, record the stop, unload the engines (no engine process stays)."""
        self.stop_requested.set()
        if self.worker is not None:
            try:
                if not self.running.is_set():
                    self._give_back_all()
                services.workers_stop(worker_ids=[self.worker.pk])
            except Exception:
                logger.exception("could not record the worker's stop")
        self.writer.stop()
        self.host.shutdown()


_loop: ServingLoop | None = None


SPAN_GAP_BYTES = 64 * 1024  # claimed lines this close together in the input file are read in one read
SPAN_MAX_BYTES = 16 * 1024 * 1024
_decode_line = msgspec.json.Decoder().decode


def read_bodies(handle, requests: list[ClaimedRequest]) -> list[dict | Exception]:
    """The request bodies of claimed lines of one input file, in the order given (an exception for a line that
    cannot be read). The requests a worker claims from a batch mostly lie side by side in its file: they are
    read in a few large reads (one range request each on object storage) rather than one per line. Each line
    is decoded with msgspec; what it refuses (NaN, a number past a double, a lone surrogate: JSON that
    validation accepted with json.loads) json.loads decodes, so a body is what validation saw."""
    order = sorted(range(len(requests)), key=lambda i: requests[i].offset)
    bodies: list[dict | Exception] = [{}] * len(requests)
    first = 0
    while first < len(order):
        start = requests[order[first]].offset
        end = start + requests[order[first]].length
        last = first + 1
        while last < len(order):
            nxt = requests[order[last]]
            if nxt.offset - end > SPAN_GAP_BYTES or nxt.offset + nxt.length - start > SPAN_MAX_BYTES:
                break
            end = max(end, nxt.offset + nxt.length)
            last += 1
        handle.seek(start)
        span = memoryview(handle.read(end - start))
        for i in order[first:last]:
            request = requests[i]
            line = span[request.offset - start : request.offset - start + request.length]
            try:
                try:
                    bodies[i] = _decode_line(line)["body"]
                except msgspec.DecodeError:
                    bodies[i] = json.loads(bytes(line))["body"]
            except Exception as exc:  # a file changed under us, or a short read: this line cannot run
                bodies[i] = exc
        first = last
    return bodies


def get_loop() -> ServingLoop:
    """The loop of this process, created on first use."""
    global _loop
    if _loop is None or (_loop.worker is not None and _loop.worker.pid != os.getpid()):
        _loop = ServingLoop(worker_name=settings.BATCHSERVER_WORKER_NAME, models=settings.BATCHSERVER_WORKER_MODELS)
        _install_signal_handlers(_loop)
    return _loop


def _install_signal_handlers(loop: ServingLoop) -> None:
    """SIGTERM/SIGINT: a running loop gives its work back and returns; an idle process stops at once. Either
    way the engines are shut down before the process exits, so no vLLM process outlives it."""

    def handler(signum, frame):
        loop.request_stop()
        if not loop.running.is_set():
            loop.shutdown()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
