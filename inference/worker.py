"""The serving loop of an inference worker: claims requests, keeps the engine full, persists results.

One loop per worker process, kept between django-q2 task runs (see inference/tasks.py), holding one warm
engine (inference/engines/host.py). Our own rows are the source of truth: requests are claimed with a
conditional update (SKIP LOCKED on PostgreSQL), results are written only while this worker still owns the
request, and a worker whose heartbeat stops has its requests handed out again.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import psutil

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from batches_api.models import Batch, BatchRequest
from batches_api.services import enqueue, error_line, output_line
from batchserver.db import bulk_update_rows
from batchserver.ids import new_id
from files_api.models import File
from files_api.services import file_open
from inference.engines.base import EngineResponse, ModelSpec
from inference.engines.host import get_host
from inference.models import EngineLoad, Worker, stale_before

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0  # results are written in small bulks about this often
CONTROL_SECONDS = 1.0  # how often cancellation and expiry of the batches being run are checked
BUSY_CLAIM_SECONDS = 1.0  # how often a worker with a half-full engine looks for more work
HEARTBEAT_SECONDS = 2.0
IDLE_POLL_SECONDS = 0.2
THROUGHPUT_WINDOW = 60.0
MAX_ATTEMPTS = 3  # a request the engine fails this often gets an error line instead of another try


def model_spec(name: str) -> ModelSpec:
    spec = settings.BATCHSERVER_MODELS[name]
    return ModelSpec(name=name, path=spec["path"], engine=spec["engine"], engine_args=dict(spec["engine_args"]))


def claimable() -> Q:
    """Requests waiting for a worker: pending ones, and running ones whose worker is gone."""
    return Q(status=BatchRequest.Status.PENDING) | Q(
        Q(worker__isnull=True) | Q(worker__stopped_at__isnull=False) | Q(worker__last_heartbeat_at__lt=stale_before()),
        status=BatchRequest.Status.RUNNING,
    )


def runnable_batches(models: list[str]):
    """In-progress batches of these models, within their window, oldest first."""
    return Batch.objects.filter(status=Batch.Status.IN_PROGRESS, model__in=models,
                                expires_at__gt=timezone.now()).order_by("created_at")


@dataclass
class InFlight:
    pk: int
    batch_id: str
    custom_id: str
    engine_request_id: str
    future: Future


class ServingLoop:
    def __init__(self, *, worker_name: str, models: list[str]) -> None:
        self.worker_name = worker_name
        self.models = models
        self.max_inflight = settings.BATCHSERVER_WORKER_MAX_INFLIGHT
        self.host = get_host()
        self.worker: Worker | None = None
        self.inflight: dict[int, InFlight] = {}
        self.done: queue.Queue[InFlight | None] = queue.Queue()
        self.results: list[tuple[InFlight, EngineResponse | BaseException]] = []
        self.released: set[int] = set()  # aborted because their batch was cancelled/expired: back to pending
        self.stop_requested = threading.Event()
        self.running = threading.Event()
        self.last_tick = time.monotonic()
        self.loading = False  # a model load may take minutes: the heartbeat goes on meanwhile
        self.tokens: deque[tuple[float, int]] = deque()
        self._heartbeat: threading.Thread | None = None
        self._input_files: dict[str, tuple[str, object]] = {}  # batch id -> (file id, open handle)
        self._finalize_sent: set[str] = set()

    # ------------------------------------------------------------------------------------------ lifecycle
    def register(self) -> Worker:
        if self.worker is None:
            self.worker = Worker.objects.create(
                name=self.worker_name, hostname=socket.gethostname(), pid=os.getpid(), served_models=self.models)
            logger.info("worker %s (%s) serving %s", self.worker_name, self.worker.pk, ", ".join(self.models))
            self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
            self._heartbeat.start()
        return self.worker

    def _beat(self) -> None:
        """Renew the heartbeat while the loop is ticking; a hung loop stops beating and loses its work."""
        stale = settings.BATCHSERVER_WORKER_STALE_SECONDS
        while not self.stop_requested.is_set():
            if self.loading or time.monotonic() - self.last_tick < stale / 2:
                try:
                    Worker.objects.filter(pk=self.worker.pk).update(
                        last_heartbeat_at=timezone.now(), inflight=len(self.inflight),
                        loaded_model=self.host.loaded_model, tokens_per_second=self.tokens_per_second(),
                        current_batches=sorted({item.batch_id for item in list(self.inflight.values())}),
                    )
                except Exception:  # the database may blink; the next beat tries again
                    logger.exception("heartbeat failed")
                finally:
                    close_old_connections()
            self.stop_requested.wait(HEARTBEAT_SECONDS)
        connection.close()

    def tokens_per_second(self) -> float:
        horizon = time.monotonic() - THROUGHPUT_WINDOW
        while self.tokens and self.tokens[0][0] < horizon:
            self.tokens.popleft()
        return round(sum(n for _, n in self.tokens) / THROUGHPUT_WINDOW, 2)

    def request_stop(self, *_args) -> None:
        self.stop_requested.set()
        self.done.put(None)  # wake the loop if it sleeps

    # ------------------------------------------------------------------------------------------ the loop
    def run(self, *, seconds: float) -> str:
        """Serve for about `seconds`; requests in flight carry over to the next run in this process."""
        self.register()
        self.running.set()
        deadline = time.monotonic() + seconds
        next_flush = next_control = next_claim = 0.0
        found_work = False
        try:
            while True:
                now = self.last_tick = time.monotonic()
                if self.stop_requested.is_set():
                    self._release_all()
                    return "stopped"
                if now >= deadline:
                    self._flush()
                    return "slice ended"
                if self.results and (now >= next_flush or not self.inflight):
                    self._flush()
                    next_flush = now + FLUSH_SECONDS
                if self.inflight and now >= next_control:
                    self._control()
                    next_control = now + CONTROL_SECONDS
                room = len(self.inflight) < self.max_inflight
                low = len(self.inflight) <= self.max_inflight // 2
                # Refill at once when the engine runs half empty while there is work; otherwise now and then.
                if room and (now >= next_claim or (found_work and low)):
                    found_work = bool(self._fill())
                    busy = len(self.inflight) > self.max_inflight // 2
                    next_claim = now + (BUSY_CLAIM_SECONDS if busy else 0.0 if found_work else IDLE_POLL_SECONDS)
                # Sleep until a result arrives (or a stop), or the next timer is due: on a small machine every
                # wake-up of ours is CPU taken from the engine.
                timers = [deadline, next_claim if room else deadline, next_flush if self.results else deadline,
                          next_control if self.inflight else deadline]
                self._collect(timeout=max(0.0, min(timers) - time.monotonic()))
        finally:
            self.running.clear()
            close_old_connections()

    def _collect(self, timeout: float) -> None:
        try:
            item = self.done.get(timeout=timeout) if timeout else self.done.get_nowait()
        except queue.Empty:
            return
        while True:
            if item is None:  # request_stop's wake-up call
                return
            self.inflight.pop(item.pk, None)
            try:
                self.results.append((item, item.future.result()))
            except BaseException as exc:  # noqa: BLE001 - the engine failed this one request
                self.results.append((item, exc))
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                return

    # ------------------------------------------------------------------------------------------ claiming
    def _pick_model(self) -> str | None:
        """The loaded model while it has work; else the served model whose oldest batch waits longest."""
        loaded = self.host.loaded_model
        if loaded in self.models and self._has_work(loaded):
            return loaded
        if self.inflight:
            return None  # never switch models with requests in flight
        batch = (runnable_batches(self.models).filter(requests__in=BatchRequest.objects.filter(claimable()))
                 .only("model").first())
        return batch.model if batch else None

    def _has_work(self, model: str) -> bool:
        return BatchRequest.objects.filter(claimable(), batch__in=runnable_batches([model])).exists()

    def _fill(self) -> int:
        model = self._pick_model()
        if model is None:
            return 0
        if self.host.loaded_model != model:
            self._load(model)
        room = self.max_inflight - len(self.inflight)
        claimed = self._claim(model, room)
        for request, batch in claimed:
            self._submit(request, batch)
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
        try:
            self.host.ensure_loaded(spec)
        finally:
            self.loading = False
            self.last_tick = time.monotonic()
        seconds = time.monotonic() - t0
        EngineLoad.objects.create(worker=self.worker, model=model, started_at=started, seconds=seconds)
        Worker.objects.filter(pk=self.worker.pk).update(loaded_model=model, engine_pids=self._engine_pids())
        logger.info("worker %s loaded %s in %.1f s", self.worker_name, model, seconds)

    def _engine_pids(self) -> list[list[float]]:
        """The engine's processes with their start times, so that a later cleanup never hits a reused pid."""
        pids = []
        for pid in self.host.child_pids():
            try:
                pids.append([pid, psutil.Process(pid).create_time()])
            except psutil.Error:
                continue
        return pids

    def _claim(self, model: str, room: int) -> list[tuple[BatchRequest, Batch]]:
        """Claim up to `room` requests, shared fairly among the model's batches so a small batch queued
        behind a big one starts at once instead of waiting for it."""
        batches = list(runnable_batches([model]).filter(
            requests__in=BatchRequest.objects.filter(claimable())).distinct()[:32])
        if not batches or room <= 0:
            return []
        share = max(1, room // len(batches))
        claimed: list[tuple[BatchRequest, Batch]] = []
        now = timezone.now()
        for batch in batches:
            take = min(share, room - len(claimed))
            if take <= 0:
                break
            with transaction.atomic():
                ids = list(BatchRequest.objects.select_for_update(skip_locked=True, of=("self",))
                           .filter(claimable(), batch=batch).order_by("line").values_list("id", flat=True)[:take])
                if ids:
                    BatchRequest.objects.filter(pk__in=ids).update(
                        status=BatchRequest.Status.RUNNING, worker=self.worker, claimed_at=now,
                        attempts=F("attempts") + 1)
            claimed.extend((request, batch) for request in
                           BatchRequest.objects.filter(pk__in=ids, worker=self.worker).order_by("line"))
        return claimed

    def _read_body(self, request: BatchRequest, batch: Batch) -> dict:
        cached = self._input_files.get(batch.id)
        if cached is None:
            file = File.objects.get(pk=batch.input_file_id)
            cached = self._input_files[batch.id] = (file.id, file_open(file))
        handle = cached[1]
        handle.seek(request.offset)
        return json.loads(handle.read(request.length))["body"]

    def _submit(self, request: BatchRequest, batch: Batch) -> None:
        engine_id = new_id("", 12)
        try:
            body = self._read_body(request, batch)
        except Exception as exc:  # noqa: BLE001 - the input went missing: this request cannot run
            future: Future = Future()
            future.set_exception(exc)
        else:
            future = self.host.submit(engine_id, batch.endpoint, body)
        item = InFlight(pk=request.pk, batch_id=batch.id, custom_id=request.custom_id,
                        engine_request_id=engine_id, future=future)
        self.inflight[request.pk] = item
        future.add_done_callback(lambda _f, item=item: self.done.put(item))

    # ------------------------------------------------------------------------------------------ results
    def _flush(self) -> None:
        """Write finished results in one transaction, only for requests this worker still owns."""
        if not self.results:
            return
        results, self.results = self.results, []
        try:
            self._write_results(results)
        except BaseException:
            self.results = results + self.results  # nothing was written: keep them for the next try
            raise

    def _write_results(self, results: list) -> None:
        now = timezone.now()
        touched = {item.batch_id for item, _ in results}
        with transaction.atomic():
            owned = dict(BatchRequest.objects.select_for_update(of=("self",)).filter(
                pk__in=[item.pk for item, _ in results], worker=self.worker,
                status=BatchRequest.Status.RUNNING).values_list("pk", "attempts"))
            rows, counts, released = [], {}, []
            for item, result in results:
                if item.pk not in owned:
                    continue  # handed to another worker meanwhile: theirs counts, never both
                engine_failed = not isinstance(result, EngineResponse)
                aborted = not engine_failed and result.aborted
                if item.pk in self.released or aborted or (engine_failed and (
                        self.stop_requested.is_set() or owned[item.pk] < MAX_ATTEMPTS)):
                    released.append(item.pk)  # aborted, or the engine failed: run it again later
                    continue
                row = BatchRequest(pk=item.pk, finished_at=now)
                if isinstance(result, EngineResponse):
                    row.status = BatchRequest.Status.COMPLETED
                    row.status_code = result.status_code
                    row.input_tokens, row.output_tokens = result.input_tokens, result.output_tokens
                    row.cached_tokens, row.reasoning_tokens = result.cached_tokens, result.reasoning_tokens
                    row.result_line = output_line(custom_id=item.custom_id, status_code=result.status_code,
                                                  body=result.body)
                    ok = result.status_code < 400
                else:
                    logger.error("request %s of batch %s failed in the engine: %r", item.custom_id,
                                 item.batch_id, result)
                    row.status = BatchRequest.Status.ERRORED
                    row.error_code = "server_error"
                    row.input_tokens = row.output_tokens = row.cached_tokens = row.reasoning_tokens = 0
                    row.result_line = error_line(custom_id=item.custom_id, code="server_error",
                                                 message=f"The engine failed on this request: {result}")
                    ok = False
                rows.append(row)
                c = counts.setdefault(item.batch_id, [0, 0, 0, 0, 0, 0])
                c[0 if ok else 1] += 1
                c[2] += row.input_tokens
                c[3] += row.cached_tokens
                c[4] += row.output_tokens
                c[5] += row.reasoning_tokens
            if released:
                BatchRequest.objects.filter(pk__in=released).update(status=BatchRequest.Status.PENDING, worker=None)
            bulk_update_rows(BatchRequest, rows, ["status", "status_code", "error_code", "finished_at",
                                                  "input_tokens", "output_tokens", "cached_tokens",
                                                  "reasoning_tokens", "result_line"])
            for batch_id, (ok, failed, tin, tcached, tout, treason) in counts.items():
                Batch.objects.filter(pk=batch_id).update(
                    completed_requests=F("completed_requests") + ok, failed_requests=F("failed_requests") + failed,
                    input_tokens=F("input_tokens") + tin, cached_tokens=F("cached_tokens") + tcached,
                    output_tokens=F("output_tokens") + tout, reasoning_tokens=F("reasoning_tokens") + treason)
            output_tokens = sum(c[4] for c in counts.values())
            Worker.objects.filter(pk=self.worker.pk).update(
                requests_done=F("requests_done") + len(rows), output_tokens=F("output_tokens") + output_tokens)
        self.released.difference_update(item.pk for item, _ in results)
        self.tokens.append((time.monotonic(), output_tokens))
        self._finalize_finished(touched)

    def _finalize_finished(self, batch_ids: set[str]) -> None:
        """Ask the task cluster to finish every batch that has nothing left to run."""
        still_open = set(BatchRequest.objects.filter(
            batch_id__in=batch_ids, status__in=[BatchRequest.Status.PENDING, BatchRequest.Status.RUNNING]
        ).values_list("batch_id", flat=True).distinct())
        in_flight_here = {item.batch_id for item in self.inflight.values()}
        for batch_id in batch_ids - in_flight_here:
            stopped = Batch.objects.filter(pk=batch_id).filter(
                ~Q(status=Batch.Status.IN_PROGRESS) | Q(expires_at__lte=timezone.now())).exists()
            if (batch_id not in still_open or stopped) and batch_id not in self._finalize_sent:
                self._finalize_sent.add(batch_id)
                with transaction.atomic():
                    enqueue("batches_api.tasks.finalize_batch", batch_id)
            if batch_id not in still_open:
                self._close_input(batch_id)

    def _close_input(self, batch_id: str) -> None:
        cached = self._input_files.pop(batch_id, None)
        if cached is not None:
            cached[1].close()

    # ------------------------------------------------------------------------------------------ control
    def _control(self) -> None:
        """Abort the requests of batches that were cancelled or ran out of time; they go back to pending and
        the batch's finalizing turns them into error lines."""
        batch_ids = {item.batch_id for item in self.inflight.values()}
        stopping = set(Batch.objects.filter(pk__in=batch_ids).filter(
            ~Q(status=Batch.Status.IN_PROGRESS) | Q(expires_at__lte=timezone.now())).values_list("id", flat=True))
        if not stopping:
            return
        doomed = [item for item in self.inflight.values() if item.batch_id in stopping and item.pk not in self.released]
        if doomed:
            logger.info("aborting %s requests of stopped batches %s", len(doomed), ", ".join(sorted(stopping)))
            self.released.update(item.pk for item in doomed)
            self._finalize_sent.difference_update(stopping)
            self.host.abort([item.engine_request_id for item in doomed])

    def _release_all(self) -> None:
        """On stop: abort what is in flight and give it back; keep what already finished."""
        if self.inflight:
            self.released.update(self.inflight)
            self.host.abort([item.engine_request_id for item in self.inflight.values()])
            deadline = time.monotonic() + 3
            while self.inflight and time.monotonic() < deadline:
                self._collect(timeout=0.1)
        self._flush()
        leftover = list(self.inflight)
        if leftover:
            BatchRequest.objects.filter(pk__in=leftover, worker=self.worker,
                                        status=BatchRequest.Status.RUNNING).update(
                status=BatchRequest.Status.PENDING, worker=None)
            self.inflight.clear()
        for batch_id in list(self._input_files):
            self._close_input(batch_id)

    def recover(self) -> None:
        """After an unexpected error in the loop: abort what is in flight and give back every request this
        worker holds, so that nothing waits on a loop that is starting over."""
        try:
            if self.inflight:
                self.host.abort([item.engine_request_id for item in self.inflight.values()])
            self.inflight.clear()
            self.results.clear()
            self.released.clear()
            while not self.done.empty():
                self.done.get_nowait()
            if self.worker is not None:
                BatchRequest.objects.filter(worker=self.worker, status=BatchRequest.Status.RUNNING).update(
                    status=BatchRequest.Status.PENDING, worker=None)
        except Exception:
            logger.exception("could not give back the requests of worker %s", self.worker_name)
        finally:
            close_old_connections()

    def shutdown(self) -> None:
        """Stop for good: give back work, record the stop, unload the engine (no engine process stays)."""
        self.stop_requested.set()
        if self.worker is not None:
            try:
                if not self.running.is_set():
                    self._release_all()
                Worker.objects.filter(pk=self.worker.pk).update(stopped_at=timezone.now(), inflight=0)
            except Exception:
                logger.exception("could not record the worker's stop")
        self.host.shutdown()


_loop: ServingLoop | None = None


def get_loop() -> ServingLoop:
    """The loop of this process, created on first use and kept between task runs."""
    global _loop
    if _loop is None or (_loop.worker is not None and _loop.worker.pid != os.getpid()):
        _loop = ServingLoop(worker_name=settings.BATCHSERVER_WORKER_NAME, models=settings.BATCHSERVER_WORKER_MODELS)
        _install_signal_handlers(_loop)
    return _loop


def _install_signal_handlers(loop: ServingLoop) -> None:
    """SIGTERM/SIGINT: a running loop gives its work back and returns; an idle process stops at once. Either
    way the engine is shut down before the process exits, so no vLLM process outlives it."""

    def handler(signum, frame):
        loop.request_stop()
        if not loop.running.is_set():
            loop.shutdown()
            os._exit(0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
