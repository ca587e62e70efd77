"""Every write of a batch, of its requests and of the workers that run them. Each state transition is one
conditional update here (`WHERE status IN (…)`), so two processes that race can never both win.

- Batches: create, cancel, validate (a claimed task-cluster job), finalize (a claimed job), retry.
- Requests: claimed by workers, recorded (only while the worker still holds them), released, marked not run.
- The sweep (run by `manage.py runtasks` every few seconds) enqueues what nobody is doing: lost validations,
  batches whose requests have all ended, cancelled and expired batches, and ends requests that keep killing
  their worker.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Sum
from django.db.models.functions import Greatest
from django.utils import timezone

from batches_api import scheduling
from batches_api.accounting import usage_add_batch
from batches_api.models import Batch, BatchRequest, Worker, gone_worker, live_worker, succeeded_q
from batches_api.signals import batch_status_changed
from batches_api.tokens import count_input_tokens
from batches_api.validation import InputValidator, ValidationResult, iter_lines
from batchserver.background import soon, soon_or_after_response
from batchserver.db import lock_timed_out, update_rows
from batchserver.errors import Conflict, InvalidRequest, NotFound, TooManyRequests
from batchserver.ids import new_id
from batchserver.limits import batches_in_flight_limit, enqueued_tokens_limit, lock_project
from batchserver.models import Priority, Project
from files_api.models import File
from files_api.services import file_create_from_local, file_delete, file_get, file_open

logger = logging.getLogger(__name__)

COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
INSERT_CHUNK = 1000

# A task-cluster job (validation, finalizing) renews its claim this often; silent for JOB_STALE it is lost.
JOB_HEARTBEAT_SECONDS = 2.0
# A job the sweep enqueued is not enqueued again for this long (it may wait in the queue behind others).
JOB_ENQUEUE_GRACE = timedelta(seconds=20)
MAX_VALIDATION_ATTEMPTS = 3
# Requests that were in flight when an engine died (or on which the engine failed) are quarantined: after
# SUSPECT_AFTER such tries they run only in small groups of their own, then alone, so that a request that kills
# the engine takes ever fewer innocent ones down with it. Innocent ones succeed in their group; a request that
# fails MAX_ATTEMPTS times, the last one alone, gets an error line instead of another try.
SUSPECT_AFTER = 2
QUARANTINE_GROUPS = {2: 16, 3: 1}  # tries so far -> requests run together
MAX_ATTEMPTS = 4
INLINE_VALIDATION_BYTES = 1_000_000  # inputs up to this size are validated by the process that created the batch
CLAIM_PASSES = 3  # shares left by batches with fewer requests than their share go to the others


def log_transition(batch_id: str, status: str, detail: str = "") -> None:
    """One log line per batch transition, with the batch id as a field for JSON logs."""
    logger.info(
        "batch %s %s%s",
        batch_id,
        status,
        f" ({detail})" if detail else "",
        extra={"batch_id": batch_id, "status": str(status)},
    )


def served_endpoints() -> list[str]:
    """Endpoints a batch may target: those some served model handles, in a stable order."""
    seen: dict[str, None] = {}
    for spec in settings.BATCHSERVER_MODELS.values():
        for endpoint in spec["endpoints"]:
            seen.setdefault(endpoint, None)
    return list(seen)


def enqueue(func: str, *args) -> None:
    """Queue a short job for the task cluster once the current transaction commits."""
    from django_q.tasks import async_task

    transaction.on_commit(
        lambda: async_task(
            func,
            *args,
            cluster=settings.TASKS_CLUSTER,
            task_name=f"{func.rsplit('.', 1)[-1]} {' '.join(map(str, args))}",
        )
    )


def _transition(
    batch_id: str, *, from_statuses: Iterable[str], to: str, job: str | None = None, detail: str = "", **fields
) -> bool:
    """Move a batch to `to` if it is in one of `from_statuses` (and still held by `job`, when given); stamp the
    time of the new status. The only way a batch's status changes."""
    batches = Batch.objects.filter(pk=batch_id, status__in=list(from_statuses))
    if job is not None:
        batches = batches.filter(job_owner=job)
    stamp = Batch.STAMPS.get(to)
    if stamp:
        fields.setdefault(stamp, timezone.now())
    with transaction.atomic():
        if not batches.update(status=to, **fields):
            return False
        batch = Batch.objects.get(pk=batch_id)  # as it is now: what the receivers record (read once for all)
        if to in Batch.FINAL_STATUSES:
            usage_add_batch(batch, to)
        batch_status_changed.send(sender=Batch, batch=batch, status=to)
    log_transition(batch_id, to, detail)
    return True


# ------------------------------------------------------------------------------------------------ create
def batch_create(
    *,
    project: Project,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, str] | None = None,
    output_expires_after: int | None = None,
) -> Batch:
    file = file_get(project=project, file_id=input_file_id, param="input_file_id")
    if file.purpose != File.Purpose.BATCH:
        raise InvalidRequest(
            f"File '{file.id}' has purpose '{file.purpose}'; a batch input must be uploaded with purpose 'batch'.",
            param="input_file_id",
        )
    now = timezone.now()
    with transaction.atomic():
        _check_batches_in_flight(project)
        batch = Batch.objects.create(
            project=project,
            endpoint=endpoint,
            completion_window=completion_window,
            input_file=file,
            metadata=metadata,
            priority=batch_priority(project, metadata),
            output_expires_after=output_expires_after,
            created_at=now,
            job_enqueued_at=now,
            expires_at=now + COMPLETION_WINDOWS[completion_window],
        )
        _validate_soon(batch.id, file.bytes)
    return batch


def _validate_soon(batch_id: str, size: int) -> None:
    """Once the batch is committed, validate its input: a small one in this process (no task queue's round trip), on
    a background thread, or when those are all busy by the thread that answered, once its response has gone; a large
    one on the task cluster. Either way a claimed job; if this process never gets to it, the sweep has the task
    cluster do it."""
    if size <= INLINE_VALIDATION_BYTES:
        transaction.on_commit(lambda: soon_or_after_response(batch_validate, batch_id=batch_id))
    else:
        enqueue("batches_api.tasks.validate_batch", batch_id)


def batch_priority(project: Project, metadata: dict[str, str] | None) -> str:
    """The project's priority, or metadata["priority"] when the project lets its batches choose."""
    asked = (metadata or {}).get("priority")
    if asked is None or not project.batch_priority_allowed:
        return project.priority
    if asked not in Priority.values:
        raise InvalidRequest(
            f"Invalid metadata['priority'] {asked!r}: use one of {', '.join(Priority.values)} (or leave it out for "
            f"the project's priority, {project.priority}).",
            param="metadata",
        )
    return asked


def _check_batches_in_flight(project: Project) -> None:
    """Inside the transaction that creates a batch: refuse it when the project has as many batches in flight as
    its limit allows. The project's row stays locked until the batch is written: two creates take turns."""
    if batches_in_flight_limit(project) is None:
        return
    locked = lock_project(project.pk)  # its limit, as it is now
    limit = batches_in_flight_limit(locked)
    if limit is None:
        return
    in_flight = Batch.objects.filter(project=project, status__in=Batch.IN_FLIGHT_STATUSES).count()
    if in_flight >= limit:
        raise TooManyRequests(
            f"Batch limit reached for project {locked.name}: {in_flight:,} batches are validating, in_progress or "
            f"finalizing. Limit: {limit:,} batches in flight. Please try again once some in_progress batches have "
            "been completed, or cancel one.",
            type="batches",
        )


def batch_get(*, project: Project, batch_id: str) -> Batch:
    batch = Batch.objects.filter(project=project, pk=batch_id).first()
    if batch is None:
        raise NotFound.object("batch", batch_id)
    return batch


# ------------------------------------------------------------------------------------------------ cancel
def batch_cancel(*, batch: Batch) -> Batch:
    """Validating: cancelled at once. In progress or finalizing: cancelling, then cancelled once no worker
    runs its requests any more, with the results so far in the output file."""
    S = Batch.Status
    now = timezone.now()
    with transaction.atomic():
        if _transition(
            batch.id,
            from_statuses=[S.VALIDATING],
            to=S.CANCELLED,
            detail="while validating",
            cancelling_at=now,
            cancelled_at=now,
        ):
            pass
        elif _transition(batch.id, from_statuses=[S.IN_PROGRESS, S.FINALIZING], to=S.CANCELLING, cancelling_at=now):
            batch_enqueue_finalize(batch.id, force=True)
        else:
            current = Batch.objects.get(pk=batch.pk)
            if current.status != S.CANCELLING:
                raise Conflict(f"Cannot cancel a batch with status '{current.status}'.")
    batch.refresh_from_db()
    return batch


# ------------------------------------------------------------------------------------------------ jobs
class JobLost(Exception):
    """The job's claim on its batch was taken over (its heartbeat went silent), or the batch moved on."""


@dataclass
class Job:
    batch_id: str
    owner: str
    lost: threading.Event = field(default_factory=threading.Event)

    def guard(self, *statuses: str) -> None:
        """Inside a transaction: lock the batch row and check that this job still holds it in one of
        `statuses`; raise JobLost otherwise. Writes after a guard commit only if the claim held."""
        held = (
            Batch.objects.select_for_update()
            .filter(pk=self.batch_id, job_owner=self.owner, status__in=statuses)
            .exists()
        )
        if not held:
            raise JobLost(self.batch_id)


def _job_stale_before() -> datetime:
    return timezone.now() - timedelta(seconds=settings.BATCHSERVER_JOB_STALE_SECONDS)


def _job_free() -> Q:
    return Q(job_owner__isnull=True) | Q(job_heartbeat_at__lt=_job_stale_before())


@contextmanager
def batch_job(batch_id: str, statuses: Iterable[str], **claim_fields) -> Iterator[Job | None]:
    """Claim the batch for one task-cluster job while it is in `statuses` and no live job holds it; renew the
    claim in the background; release it at the end. Yields None when the claim failed (another job runs, or
    the batch moved on): whatever django-q2 delivers twice runs once."""
    owner = new_id("job_", 8)
    claimed = Batch.objects.filter(_job_free(), pk=batch_id, status__in=list(statuses)).update(
        job_owner=owner, job_heartbeat_at=timezone.now(), **claim_fields
    )
    if not claimed:
        yield None
        return
    job = Job(batch_id=batch_id, owner=owner)
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(JOB_HEARTBEAT_SECONDS):
                try:
                    if not Batch.objects.filter(pk=batch_id, job_owner=owner).update(job_heartbeat_at=timezone.now()):
                        job.lost.set()
                        return
                except Exception:  # the database blinked: the next beat tries again
                    logger.warning("heartbeat of job %s on batch %s failed", owner, batch_id, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"job-{batch_id}", daemon=True)
    thread.start()
    try:
        yield job
    finally:
        stop.set()
        thread.join(timeout=JOB_HEARTBEAT_SECONDS * 2)
        try:
            Batch.objects.filter(pk=batch_id, job_owner=owner).update(job_owner=None, job_heartbeat_at=None)
        except Exception:  # it goes stale by itself
            logger.warning("could not release job %s on batch %s", owner, batch_id, exc_info=True)


def _not_just_enqueued() -> Q:
    """No job of the batch waits in the queue: none was enqueued, or the last one was taken by a job (which
    claimed the batch after it was enqueued), or it was enqueued long enough ago to be taken as lost."""
    return (
        Q(job_enqueued_at__isnull=True)
        | Q(job_enqueued_at__lt=timezone.now() - JOB_ENQUEUE_GRACE)
        | Q(job_heartbeat_at__gt=F("job_enqueued_at"))
    )


def batch_enqueue_finalize(batch_id: str, *, force: bool = False, here: bool = False) -> bool:
    """Ask for the batch to be finalized, unless that was asked a moment ago (`force`: ask anyway): by the task
    cluster, or (`here`) on a background thread of this process (batchserver.background). Safe inside or outside
    a transaction; the job starts when it commits."""
    batches = Batch.objects.filter(pk=batch_id)
    if not force:
        batches = batches.filter(_not_just_enqueued())
    with transaction.atomic():
        if not batches.update(job_enqueued_at=timezone.now()):
            return False
        if here:
            transaction.on_commit(lambda: soon(batch_finalize, batch_id=batch_id))
        else:
            enqueue("batches_api.tasks.finalize_batch", batch_id)
    return True


# ------------------------------------------------------------------------------------------------ validate
def batch_validate(*, batch_id: str) -> Batch | None:
    """Stream the input once, as a claimed job; record one BatchRequest per line and move the batch to
    in_progress, or fail it with every error found (code, line)."""
    with batch_job(batch_id, [Batch.Status.VALIDATING], validation_attempts=F("validation_attempts") + 1) as job:
        if job is not None:
            try:
                _validate(job)
            except JobLost:
                logger.info("validation of batch %s stopped: the batch moved on or another job took it", batch_id)
                _drop_requests_of_cancelled(batch_id)
            except Exception:  # the sweep tries again, up to MAX_VALIDATION_ATTEMPTS
                logger.exception("validation of batch %s failed", batch_id, extra={"batch_id": batch_id})
    return Batch.objects.filter(pk=batch_id).first()


def _validate(job: Job) -> None:
    batch = Batch.objects.get(pk=job.batch_id)
    file = File.objects.filter(pk=batch.input_file_id).first()
    if file is None:
        message = (
            f"The input file '{batch.input_file_id}' was deleted before the batch started. Upload it again "
            "and create a new batch."
        )
        _fail_validation(job, [{"code": "invalid_request", "param": "input_file_id", "line": None, "message": message}])
        return
    with transaction.atomic():
        job.guard(Batch.Status.VALIDATING)
        BatchRequest.objects.filter(batch_id=job.batch_id).delete()  # rows of an earlier attempt that died
    validator = InputValidator(
        endpoint=batch.endpoint,
        models=settings.BATCHSERVER_MODELS,
        max_requests=settings.BATCHSERVER_MAX_BATCH_REQUESTS,
        count_tokens=count_input_tokens,
    )
    last_rows = _record_lines(job, file, validator)
    result = validator.finish()
    if result.error_count:
        _fail_validation(job, result.errors)
        return
    with transaction.atomic():
        job.guard(Batch.Status.VALIDATING)
        refusal = _enqueued_tokens_refusal(batch, result)
        if refusal is not None:
            _fail_validation(job, [refusal], model=result.model, enqueued_tokens=result.input_tokens)
            return
        BatchRequest.objects.bulk_create(last_rows)
        _transition(
            job.batch_id,
            from_statuses=[Batch.Status.VALIDATING],
            to=Batch.Status.IN_PROGRESS,
            job=job.owner,
            detail=f"{result.total} requests for {result.model}, {result.input_tokens} input tokens",
            model=result.model,
            total_requests=result.total,
            enqueued_tokens=result.input_tokens,
        )


def _enqueued_tokens_refusal(batch: Batch, result: ValidationResult) -> dict | None:
    """Inside the transaction that moves a validated batch to in_progress: the error that fails it instead, when its
    input tokens and those of the project's other batches of the model in flight would pass the project's limit
    (OpenAI's token_limit_exceeded, in OpenAI's words). The project's row stays locked until the batch has moved:
    two batches validated at the same time take turns, and the second one counts the first."""
    model = result.model or ""
    if enqueued_tokens_limit(batch.project_id, model) is None:
        return None
    project = lock_project(batch.project_id)
    limit = enqueued_tokens_limit(project.pk, model)  # as it is now that the row is held
    if limit is None:
        return None
    others = (
        Batch.objects.filter(project_id=project.pk, model=model, status__in=Batch.IN_FLIGHT_STATUSES)
        .exclude(pk=batch.pk)
        .aggregate(total=Sum("enqueued_tokens"))["total"]
        or 0
    )
    if others + result.input_tokens <= limit:
        return None
    return {
        "code": "token_limit_exceeded",
        "param": None,
        "line": None,
        "message": f"Enqueued token limit reached for {model} in project {project.name}. Limit: {limit:,} enqueued "
        "tokens. Please try again once some in_progress batches have been completed.",
    }


def _record_lines(job: Job, file: File, validator: InputValidator) -> list[BatchRequest]:
    """Check every line of the file, writing a request row per valid line in chunks (while the job holds the
    batch); returns the rows of the last chunk, which the caller writes with the transition. Once a line has an
    error no row is written: the batch will fail, and reading on reports every error."""
    pending: list[BatchRequest] = []
    with file_open(file) as fh:
        for number, offset, raw in iter_lines(fh):
            if job.lost.is_set():
                raise JobLost(job.batch_id)
            parsed = validator.check(number, offset, raw)
            if validator.result.error_count:
                pending.clear()
                continue
            if parsed is not None:
                pending.append(
                    BatchRequest(
                        batch_id=job.batch_id,
                        line=parsed.line,
                        custom_id=parsed.custom_id,
                        offset=parsed.offset,
                        length=parsed.length,
                    )
                )
            if len(pending) >= INSERT_CHUNK:
                with transaction.atomic():
                    job.guard(Batch.Status.VALIDATING)
                    BatchRequest.objects.bulk_create(pending)
                pending.clear()
    return pending


def _fail_validation(job: Job, errors: list[dict], **fields) -> None:
    with transaction.atomic():
        job.guard(Batch.Status.VALIDATING)
        BatchRequest.objects.filter(batch_id=job.batch_id).delete()
        _transition(
            job.batch_id,
            from_statuses=[Batch.Status.VALIDATING],
            to=Batch.Status.FAILED,
            job=job.owner,
            detail=errors[0]["code"] if errors else "",
            errors=errors,
            **fields,
        )


def _drop_requests_of_cancelled(batch_id: str) -> None:
    """A batch cancelled while it was validated never runs: the rows written so far are of no use."""
    with transaction.atomic():
        if (
            Batch.objects.select_for_update()
            .filter(pk=batch_id, status=Batch.Status.CANCELLED, total_requests=0)
            .exists()
        ):
            BatchRequest.objects.filter(batch_id=batch_id).delete()


# ------------------------------------------------------------------------------------------------ result lines
def result_file_line(result_line: str) -> bytes:
    """A request's line as the output or error file holds it, and as GET /v1/batches/{id}/results sends it: the
    one place that turns a recorded line into bytes, so that both are the same byte for byte."""
    return result_line.encode() + b"\n"


_encode_json = msgspec.json.Encoder().encode


def _json_line(value: dict) -> str:
    """One line of JSON, compact, UTF-8 text unescaped. msgspec writes it (several times faster than json.dumps,
    an embedding's 384 floats above all; a worker writes thousands a second) and writes NaN and infinities as
    null, as JSON has them. What it refuses (an integer past 64 bits, a lone surrogate) json.dumps writes, with
    every character past ASCII escaped, so that the line is valid UTF-8 as the database and the files need."""
    try:
        return _encode_json(value).decode()
    except (TypeError, ValueError, OverflowError, UnicodeError):
        return json.dumps(_finite(value), separators=(",", ":"))


def _finite(value):
    """The value with NaN and infinities as None, as msgspec writes them (json.dumps would write NaN, not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def output_line(*, custom_id: str, status_code: int, body: dict) -> str:
    """A line of the output file, in OpenAI's format."""
    return _json_line(
        {
            "id": new_id("batch_req_", 16),
            "custom_id": custom_id,
            "response": {"status_code": status_code, "request_id": new_id("req_", 16), "body": body},
            "error": None,
        }
    )


def error_line(*, custom_id: str, code: str, message: str) -> str:
    """A line of the error file: a request that never produced a response."""
    return _json_line(
        {
            "id": new_id("batch_req_", 16),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )


@dataclass(frozen=True)
class NotRun:
    """Why requests that never produced a response end in the error file."""

    code: str
    message: str


CANCELLED = NotRun("batch_cancelled", "This request was not run: the batch was cancelled.")
EXPIRED = NotRun("batch_expired", "This request could not be executed before the completion window expired.")
POISONED = NotRun(
    "server_error",
    f"The engine's process died {MAX_ATTEMPTS} times while running this request, the "
    "last time with no other request beside it, so it was not run again. Check the "
    "request (its size and parameters, say) and send it in a new batch.",
)


def engine_failed(error: object) -> NotRun:
    return NotRun(
        "server_error",
        f"The engine failed on this request {MAX_ATTEMPTS} times: {str(error)[:300]}. "
        "Check the request and send it in a new batch.",
    )


# ------------------------------------------------------------------------------------------------ workers
def worker_register(*, name: str, hostname: str, pid: int, served_models: list[str]) -> Worker:
    return Worker.objects.create(name=name, hostname=hostname, pid=pid, served_models=served_models)


def worker_ready(*, worker_id: int) -> None:
    """The worker has loaded what it preloads: it takes batches without a load on their path."""
    Worker.objects.filter(pk=worker_id, ready_at__isnull=True).update(ready_at=timezone.now())


def worker_loading(*, worker_id: int, model: str) -> None:
    """The worker starts loading `model` ("": the load has ended, loaded or not)."""
    Worker.objects.filter(pk=worker_id).update(loading_model=model, loading_since=timezone.now() if model else None)


def worker_heartbeat(*, worker_id: int, **report) -> bool:
    """Renew a worker's heartbeat (and what it reports about itself). False: it was marked stopped."""
    return bool(
        Worker.objects.filter(pk=worker_id, stopped_at__isnull=True).update(last_heartbeat_at=timezone.now(), **report)
    )


def workers_stop(*, worker_ids: Iterable[int]) -> int:
    """Mark workers stopped (they stopped, or their process is gone): what they held is claimable at once."""
    return Worker.objects.filter(pk__in=list(worker_ids), stopped_at__isnull=True).update(
        stopped_at=timezone.now(), inflight=0
    )


# ------------------------------------------------------------------------------------------------ requests
@dataclass(frozen=True)
class ClaimedRequest:
    id: int
    batch_id: str
    custom_id: str
    offset: int
    length: int
    attempts: int  # including this claim
    engine_priority: int = 0  # for engines that schedule by priority (lower runs earlier): batches_api.scheduling


@dataclass(frozen=True)
class Outcome:
    """How a request ended: a response (any status code, a line of the output file), or an error line."""

    request: ClaimedRequest
    status_code: int | None = None  # None: no response, see not_run
    body: dict | None = None
    not_run: NotRun | None = None
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def runnable_batches(models: Iterable[str]):
    """In-progress batches of these models, within their window, oldest first."""
    return Batch.objects.filter(
        status=Batch.Status.IN_PROGRESS, model__in=list(models), expires_at__gt=timezone.now()
    ).order_by("created_at")


def _tries(tries: int | None) -> Q:
    """`tries`: requests that failed exactly that many times (a quarantine level); None: those never suspected."""
    return Q(attempts__lt=SUSPECT_AFTER) if tries is None else Q(attempts=tries)


def _claimable(tries: int | None = None) -> Q:
    """Requests a worker may claim: pending ones, and running ones whose worker is gone (see _tries)."""
    return _tries(tries) & (
        Q(status=BatchRequest.Status.PENDING) | Q(gone_worker("worker"), status=BatchRequest.Status.RUNNING)
    )


def _orphaned() -> Q | None:
    """The claimable running requests (their worker is gone) as a condition on their workers' ids, which an
    index serves; None when there are none, the usual case. One query per claim finds those workers, from the
    workers that are not live or from the running requests, whichever PostgreSQL finds cheaper (measured with
    10,000 stopped workers and 16,000 running requests: 5 ms)."""
    running = BatchRequest.Status.RUNNING
    holders = list(
        Worker.objects.exclude(live_worker())
        .filter(Exists(BatchRequest.objects.filter(status=running, worker=OuterRef("pk"))))
        .values_list("pk", flat=True)
    )
    if not holders and not BatchRequest.objects.filter(status=running, worker__isnull=True).exists():
        return None
    # gone_worker again: a worker counted here that came back to life since is not robbed.
    return Q(Q(worker__isnull=True) | Q(worker_id__in=holders), gone_worker("worker"), status=running)


def models_with_work(models: Iterable[str]) -> list[str]:
    """The models among these that have claimable requests, the one whose oldest batch waits longest first."""
    rows = (
        runnable_batches(models)
        .filter(
            Exists(
                BatchRequest.objects.filter(
                    Q(status=BatchRequest.Status.PENDING)
                    | Q(gone_worker("worker"), status=BatchRequest.Status.RUNNING),
                    attempts__lt=MAX_ATTEMPTS,
                    batch=OuterRef("pk"),
                )
            )
        )
        .values_list("model", flat=True)[:200]
    )
    return list(dict.fromkeys(rows))


def quarantine_level(model: str) -> int | None:
    """The highest quarantine level with requests waiting for this model (see QUARANTINE_GROUPS), or None."""
    levels = (
        BatchRequest.objects.filter(
            batch__in=runnable_batches([model]), attempts__gte=SUSPECT_AFTER, attempts__lt=MAX_ATTEMPTS
        )
        .filter(Q(status=BatchRequest.Status.PENDING) | Q(gone_worker("worker"), status=BatchRequest.Status.RUNNING))
        .order_by("-attempts")
        .values_list("attempts", flat=True)[:1]
    )
    return levels[0] if levels else None


def requests_claim(*, worker_id: int, model: str, limit: int, tries: int | None = None) -> list[ClaimedRequest]:
    """Claim up to `limit` requests of the model's runnable batches for a worker, shared by priority, by project
    weight and among each project's batches (batches_api.scheduling). A batch that has fewer requests than its
    share leaves the rest to the others, in a further pass. `tries`: claim requests of that quarantine level
    instead, oldest batch first (the worker runs them as a group of their own)."""
    if limit <= 0:
        return []
    claimable = _claimable(tries)
    runnable = runnable_batches([model])
    which = Claim(tries=_tries(tries), orphaned=_orphaned(), worker_id=worker_id)
    if tries is not None:
        batch_ids = runnable.filter(Exists(BatchRequest.objects.filter(claimable, batch=OuterRef("pk"))))
        claimed: list[ClaimedRequest] = []
        for batch_id in batch_ids.values_list("id", flat=True)[:limit]:
            claimed.extend(_claim_from(batch_id, which, limit - len(claimed)))
            if len(claimed) >= limit:
                break
        return claimed
    waiting = scheduling.candidates(runnable, claimable)
    running = scheduling.running_slots(runnable)
    claimed = []
    for _ in range(CLAIM_PASSES):
        exhausted = set()
        for group in scheduling.by_class(waiting):
            for share in scheduling.share_out(group, running, limit - len(claimed)):
                got = _claim_from(share.batch_id, which, share.take, share.engine_priority)
                claimed.extend(got)
                running[share.unit] = running.get(share.unit, 0) + len(got)
                if len(got) < share.take:
                    exhausted.add(share.batch_id)
        waiting = [candidate for candidate in waiting if candidate.batch_id not in exhausted]
        if not exhausted or not waiting or len(claimed) >= limit:
            break
    return claimed


@dataclass(frozen=True)
class Claim:
    """What one worker's claim takes: requests of these tries, the orphaned ones (see _orphaned) first."""

    tries: Q
    orphaned: Q | None
    worker_id: int


def _claim_from(batch_id: str, claim: Claim, take: int, engine_priority: int = 0) -> list[ClaimedRequest]:
    """Up to `take` claimable requests of the batch (see _claimable): those orphaned by a gone worker first,
    then pending ones in line order. Each is one statement, UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
    LOCKED LIMIT n) RETURNING …, so workers that claim at once skip each other's rows and never block. Apart,
    each is an index walk that stops after n rows; as one statement (pending OR orphaned) it read every
    claimable row of the batch and sorted them, 50,000 rows for a claim of 4,000."""
    got: list[ClaimedRequest] = []
    if claim.orphaned is not None:
        got = _claim_rows(batch_id, claim.tries & claim.orphaned, take, claim.worker_id, engine_priority)
    if len(got) < take:
        pending = claim.tries & Q(status=BatchRequest.Status.PENDING)
        got += _claim_rows(batch_id, pending, take - len(got), claim.worker_id, engine_priority)
    return got


def _claim_rows(batch_id: str, which: Q, take: int, worker_id: int, engine_priority: int) -> list[ClaimedRequest]:
    quote = connection.ops.quote_name
    table = quote(BatchRequest._meta.db_table)
    with transaction.atomic():
        chosen = (
            BatchRequest.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(which, batch_id=batch_id)
            .order_by("line")
            .values("id")[:take]
        )
        subquery, params = chosen.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {quote('status')} = %s, {quote('worker_id')} = %s, {quote('claimed_at')} = %s, "
                f"{quote('attempts')} = {quote('attempts')} + 1 WHERE {quote('id')} IN ({subquery}) RETURNING "
                + ", ".join(quote(c) for c in ("id", "batch_id", "custom_id", "offset", "length", "attempts", "line")),
                [BatchRequest.Status.RUNNING, worker_id, timezone.now(), *params],
            )
            rows = cursor.fetchall()
    return [
        ClaimedRequest(pk, batch, custom_id, offset, length, attempts, engine_priority)
        for pk, batch, custom_id, offset, length, attempts, _ in sorted(rows, key=lambda row: row[6])
    ]


def requests_release(*, worker_id: int, request_ids: Iterable[int], failed: bool = False) -> int:
    """Give requests back (pending again). A clean give-back (stop, cancel) does not count as a try; a failed
    one (`failed`: the engine failed on it) does."""
    attempts = F("attempts") if failed else Greatest(F("attempts") - 1, 0)
    return BatchRequest.objects.filter(
        pk__in=list(request_ids), worker_id=worker_id, status=BatchRequest.Status.RUNNING
    ).update(status=BatchRequest.Status.PENDING, worker=None, attempts=attempts)


RECORDED_FIELDS = (
    "status",
    "finished_at",
    "status_code",
    "error_code",
    "result_line",
    "result_seq",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def _number_lines(batch_ids: list[str]) -> tuple[list[int], dict[str, int]]:
    """Number result lines in their batches' completion order, given the batch of each line: returns the number of
    each line and the new last number of each batch (for Batch.last_result_seq, which the caller sets in this
    transaction). Inside a transaction: the batches' rows stay locked until it commits (taken in id order, so two
    writers never deadlock), so a transaction that numbers lines after another commits after it, and numbers
    follow commit order."""
    last = dict(
        Batch.objects.select_for_update()
        .filter(pk__in=set(batch_ids))
        .order_by("pk")
        .values_list("pk", "last_result_seq")
    )
    numbers = []
    for batch_id in batch_ids:
        last[batch_id] += 1
        numbers.append(last[batch_id])
    return numbers, last


def requests_record(*, worker_id: int, outcomes: list[Outcome]) -> set[int]:
    """Write the outcomes of requests the worker still holds, and add them to their batches' counts and usage,
    in one transaction. A request the worker no longer holds (handed to another worker meanwhile) is left
    alone: theirs counts, never both. Returns the ids written."""
    now = timezone.now()
    with transaction.atomic():
        numbers, last_numbers = _number_lines([outcome.request.batch_id for outcome in outcomes])
        rows = [_recorded_row(outcome, now, number) for outcome, number in zip(outcomes, numbers, strict=True)]
        written = set(
            update_rows(
                BatchRequest,
                RECORDED_FIELDS,
                rows,
                where="t.status = %s AND t.worker_id = %s",
                where_params=[BatchRequest.Status.RUNNING, worker_id],
            )
        )
        _add_to_counts([o for o in outcomes if o.request.id in written], last_numbers)
        output_tokens = sum(o.output_tokens for o in outcomes if o.request.id in written)
        Worker.objects.filter(pk=worker_id).update(
            requests_done=F("requests_done") + len(written), output_tokens=F("output_tokens") + output_tokens
        )
    return written


def _recorded_row(outcome: Outcome, now: datetime, number: int) -> tuple:
    """The values of RECORDED_FIELDS for one outcome (after the request's id): its output or error line, and the
    line's number in the batch's completion order."""
    request = outcome.request
    if outcome.status_code is not None:
        line = output_line(custom_id=request.custom_id, status_code=outcome.status_code, body=outcome.body or {})
        return (
            request.id,
            BatchRequest.Status.RESPONDED,
            now,
            outcome.status_code,
            None,
            line,
            number,
            outcome.input_tokens,
            outcome.cached_tokens,
            outcome.output_tokens,
            outcome.reasoning_tokens,
        )
    not_run = outcome.not_run or engine_failed("unknown error")
    line = error_line(custom_id=request.custom_id, code=not_run.code, message=not_run.message)
    return (request.id, BatchRequest.Status.ERRORED, now, None, not_run.code, line, number, 0, 0, 0, 0)


def _add_to_counts(outcomes: list[Outcome], last_numbers: dict[str, int]) -> None:
    """Progress of each batch as its requests end: request_counts and usage move while the batch runs, and the
    last number given to its result lines."""
    per_batch: dict[str, dict[str, int]] = {}
    for outcome in outcomes:
        counts = per_batch.setdefault(
            outcome.request.batch_id,
            dict.fromkeys(
                (
                    "completed_requests",
                    "failed_requests",
                    "input_tokens",
                    "cached_tokens",
                    "output_tokens",
                    "reasoning_tokens",
                ),
                0,
            ),
        )
        counts["completed_requests" if outcome.succeeded else "failed_requests"] += 1
        for name in ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens"):
            counts[name] += getattr(outcome, name)
    for batch_id, counts in per_batch.items():
        Batch.objects.filter(pk=batch_id).update(
            last_result_seq=last_numbers[batch_id], **{name: F(name) + value for name, value in counts.items()}
        )


def requests_not_run(*, batch_id: str | None, not_run: NotRun, extra: Q = Q()) -> int:
    """Give an error line to every request of the batch (of any batch, when None) that has not ended and that
    no live worker holds: pending ones, and running ones whose worker is gone. Conditional, row by row: a
    result a worker commits meanwhile is kept, never overwritten."""
    candidates = BatchRequest.objects.filter(
        Q(status=BatchRequest.Status.PENDING) | Q(gone_worker("worker"), status=BatchRequest.Status.RUNNING), extra
    )
    if batch_id is not None:
        candidates = candidates.filter(batch_id=batch_id)
    ended = 0
    while True:
        chunk = list(candidates.values_list("id", "batch_id", "custom_id")[:INSERT_CHUNK])
        if not chunk:
            return ended
        now = timezone.now()
        batch_of = {pk: batch for pk, batch, _ in chunk}
        with transaction.atomic():
            numbers, last_numbers = _number_lines([batch for _, batch, _ in chunk])
            rows = [
                (
                    pk,
                    BatchRequest.Status.ERRORED,
                    not_run.code,
                    now,
                    None,
                    error_line(custom_id=custom_id, code=not_run.code, message=not_run.message),
                    number,
                )
                for (pk, _, custom_id), number in zip(chunk, numbers, strict=True)
            ]
            written = update_rows(
                BatchRequest,
                ("status", "error_code", "finished_at", "worker", "result_line", "result_seq"),
                rows,
                where="t.status IN (%s, %s)",
                where_params=[BatchRequest.Status.PENDING, BatchRequest.Status.RUNNING],
            )
            per_batch: dict[str, int] = {}
            for pk in written:
                per_batch[batch_of[pk]] = per_batch.get(batch_of[pk], 0) + 1
            for batch, count in per_batch.items():
                Batch.objects.filter(pk=batch).update(
                    failed_requests=F("failed_requests") + count, last_result_seq=last_numbers[batch]
                )
        ended += len(written)  # rows that changed state meanwhile are not candidates any more


def requests_end_poisoned() -> int:
    """Requests whose worker died with them on their last try: an error line, and the batch moves on."""
    return requests_not_run(
        batch_id=None, not_run=POISONED, extra=Q(status=BatchRequest.Status.RUNNING, attempts__gte=MAX_ATTEMPTS)
    )


# ------------------------------------------------------------------------------------------------ finalize
@dataclass(frozen=True)
class Ending:
    """How a batch that is being finished ends: its final status, and the error line of requests that never
    ran (None: every request has ended)."""

    status: str
    not_run: NotRun | None = None


def _ending(batch: Batch, now: datetime) -> Ending | None:
    """How the batch ends now, or None when it is not finished yet."""
    S = Batch.Status
    if batch.status == S.CANCELLING:
        return Ending(S.CANCELLED, CANCELLED)
    if batch.status == S.FINALIZING:
        return Ending(S.COMPLETED)
    if batch.status == S.IN_PROGRESS:
        if not BatchRequest.objects.filter(batch=batch).open().exists():
            return Ending(S.COMPLETED)
        if batch.expires_at <= now:
            return Ending(S.EXPIRED, EXPIRED)
    return None


def batch_finalize(*, batch_id: str) -> Batch | None:
    """Finish a batch whose requests have all ended, or which was cancelled or expired and of which no live
    worker still runs requests: write the output and error files and set the final status. A claimed job:
    safe to call any time, any number of times, from anywhere."""
    batch = Batch.objects.filter(pk=batch_id).select_related("project").first()
    if batch is None:
        return None
    ending = _ending(batch, timezone.now())
    if ending is None:
        return batch
    if ending.not_run is not None and BatchRequest.objects.filter(batch=batch).held_by_live_worker().exists():
        return batch  # its worker aborts them and asks for finalizing again
    with batch_job(batch_id, [batch.status]) as job:
        if job is not None:
            try:
                _finalize(job, batch, ending)
            except JobLost:
                logger.info("finalizing batch %s stopped: the batch moved on or another job took it", batch_id)
    return Batch.objects.get(pk=batch_id)


def _finalize(job: Job, batch: Batch, ending: Ending) -> None:
    S = Batch.Status
    status = batch.status
    if ending.not_run is not None:
        requests_not_run(batch_id=batch.id, not_run=ending.not_run)
    if BatchRequest.objects.filter(batch=batch).open().exists():
        return  # a live worker took some meanwhile: it asks for finalizing again when they end
    if status == S.IN_PROGRESS and ending.status == S.COMPLETED:
        if not _transition(batch.id, from_statuses=[S.IN_PROGRESS], to=S.FINALIZING, job=job.owner):
            raise JobLost(batch.id)
        status = S.FINALIZING
    output, errors = _write_result_files(batch)
    totals = BatchRequest.objects.filter(batch=batch).aggregate(
        input_tokens=Sum("input_tokens"),
        cached_tokens=Sum("cached_tokens"),
        output_tokens=Sum("output_tokens"),
        reasoning_tokens=Sum("reasoning_tokens"),
        succeeded=Count("id", filter=succeeded_q()),
        requests=Count("id"),
    )
    succeeded = totals.pop("succeeded")
    failed = totals.pop("requests") - succeeded
    done = _transition(
        batch.id,
        from_statuses=[status],
        to=ending.status,
        job=job.owner,
        detail=f"{succeeded} succeeded, {failed} failed",
        output_file=output,
        error_file=errors,
        completed_requests=succeeded,
        failed_requests=failed,
        **{name: value or 0 for name, value in totals.items()},
    )
    if not done:  # the batch moved on (cancelled while finalizing, say): these files belong to nobody
        for file in (output, errors):
            if file is not None:
                file_delete(file=file)
        raise JobLost(batch.id)


def _write_result_files(batch: Batch) -> tuple[File | None, File | None]:
    """The batch's output file (the lines of requests with a response) and error file (the lines of requests that
    never ran), each in input order; None for a file that would be empty. One pass over the (batch, status, line)
    index: a small batch's lines come in one query, a large one's through a cursor, a chunk at a time."""
    S = BatchRequest.Status
    query = BatchRequest.objects.filter(batch=batch).order_by("status", "line").values_list("status", "result_line")
    rows = query.iterator(chunk_size=RESULTS_IN_ONE_QUERY) if batch.total_requests > RESULTS_IN_ONE_QUERY else query
    with (
        tempfile.NamedTemporaryFile("w+b", suffix=".jsonl") as output,
        tempfile.NamedTemporaryFile("w+b", suffix=".jsonl") as errors,
    ):
        files = {S.RESPONDED: output, S.ERRORED: errors}
        for status, line in rows:
            if status in files:  # every request has ended by now: nothing else is found
                files[status].write(result_file_line(line))
        return (
            _store_results(batch, output, "output") if output.tell() else None,  # every line ends with a newline
            _store_results(batch, errors, "error") if errors.tell() else None,
        )


RESULTS_IN_ONE_QUERY = 2000


def _store_results(batch: Batch, tmp, kind: str) -> File:
    tmp.flush()
    return file_create_from_local(
        project=batch.project,
        path=tmp.name,
        purpose=File.Purpose.BATCH_OUTPUT,
        filename=f"{batch.id}_{kind}.jsonl",
        expires_after=batch.output_expires_after,
    )


# ------------------------------------------------------------------------------------------------ sweep
@dataclass
class SweepReport:
    poisoned: int = 0
    validations: int = 0
    finalizations: int = 0
    failed: int = 0
    errors: int = 0
    busy: int = 0  # locked by another transaction past the sweep's lock wait: the next sweep tries again


def sweep() -> SweepReport:
    """Enqueue what nobody is doing, each batch on its own (one failing batch never stalls the others):
    validations whose job was lost, batches whose requests have all ended (their worker died before asking),
    cancelled and expired batches; and end requests that keep killing their worker."""
    report = SweepReport()
    _each(report, None, _end_poisoned)
    quiet = _job_free() & _not_just_enqueued()
    now = timezone.now()
    lost = Batch.objects.filter(quiet, status=Batch.Status.VALIDATING).values_list("id", "validation_attempts")
    for batch_id, attempts in lost[:SWEPT]:
        _each(report, batch_id, _retry_validation, attempts, quiet)
    finishing = (
        Q(status__in=[Batch.Status.CANCELLING, Batch.Status.FINALIZING])
        | Q(status=Batch.Status.IN_PROGRESS, expires_at__lte=now)
        | Q(
            ~Exists(BatchRequest.objects.filter(batch=OuterRef("pk"), status__in=BatchRequest.OPEN)),
            status=Batch.Status.IN_PROGRESS,
        )
    )
    for batch_id in Batch.objects.filter(quiet, finishing).values_list("id", flat=True)[:SWEPT]:
        _each(report, batch_id, _finalize_forgotten)
    return report


SWEPT = 1000  # batches of each kind handled per sweep (the next sweep takes the rest)


def _each(report: SweepReport, batch_id: str | None, handle, *args) -> None:
    """Handle one batch of the sweep (None: a step over all batches): a failure is logged with its id, and the
    sweep goes on with the others."""
    subject = f"batch {batch_id}" if batch_id else f"step {handle.__name__}"
    try:
        handle(report, batch_id, *args)
    except Exception as error:
        if lock_timed_out(error):
            report.busy += 1
            logger.warning(
                "sweep: %s has rows locked by a transaction that has not ended (a process stalled in it?); the "
                "next sweep tries again",
                subject,
            )
            return
        report.errors += 1
        logger.exception("sweep: could not handle %s", subject, extra={"batch_id": batch_id})


def _end_poisoned(report: SweepReport, _batch_id: None) -> None:
    report.poisoned += requests_end_poisoned()


def _retry_validation(report: SweepReport, batch_id: str, attempts: int, quiet: Q) -> None:
    if attempts >= MAX_VALIDATION_ATTEMPTS:
        message = (
            f"Validation of the input file did not finish in {attempts} attempts (the server's task log has "
            "the cause). Check the file, then create the batch again."
        )
        report.failed += _transition(
            batch_id,
            from_statuses=[Batch.Status.VALIDATING],
            to=Batch.Status.FAILED,
            detail="validation lost",
            errors=[{"code": "validation_failed", "line": None, "param": None, "message": message}],
        )
        return
    with transaction.atomic():
        if Batch.objects.filter(quiet, pk=batch_id).update(job_enqueued_at=timezone.now()):
            enqueue("batches_api.tasks.validate_batch", batch_id)
            report.validations += 1


def _finalize_forgotten(report: SweepReport, batch_id: str) -> None:
    report.finalizations += batch_enqueue_finalize(batch_id)


# ------------------------------------------------------------------------------------------------ retry
def batch_retry_failed(*, batch: Batch) -> Batch:
    """A new batch of the same owner, endpoint and metadata, made of the requests of a finished batch that did
    not succeed: responses other than 2xx, and requests that never ran (errored, or left pending/running).
    Their lines are copied byte for byte from the parent's input file into a new input file, in input order;
    the new batch goes through batch_create (so it is validated like any other) and records its parent."""
    if batch.status not in Batch.FINAL_STATUSES:
        raise Conflict(f"Batch '{batch.id}' is {batch.status}; only a finished batch can be retried.")
    retry = BatchRequest.objects.filter(batch=batch).exclude(succeeded_q())
    if not retry.exists():
        raise Conflict(f"Batch '{batch.id}' has no failed or unrun requests to retry.")
    input_file = File.objects.filter(pk=batch.input_file_id).first()
    if input_file is None:
        raise Conflict(
            f"The input file '{batch.input_file_id}' of batch '{batch.id}' was deleted; its requests "
            "cannot be read again."
        )
    with tempfile.NamedTemporaryFile("w+b", suffix=".jsonl") as tmp, file_open(input_file) as source:
        for offset, length in retry.order_by("line").values_list("offset", "length").iterator(chunk_size=2000):
            source.seek(offset)
            tmp.write(source.read(length))
            tmp.write(b"\n")
        tmp.flush()
        new_file = file_create_from_local(
            project=batch.project, path=tmp.name, purpose=File.Purpose.BATCH, filename=f"{batch.id}_retry.jsonl"
        )
    try:
        with transaction.atomic():
            new = batch_create(
                project=batch.project,
                input_file_id=new_file.id,
                endpoint=batch.endpoint,
                completion_window=batch.completion_window,
                metadata=batch.metadata,
                output_expires_after=batch.output_expires_after,
            )
            Batch.objects.filter(pk=new.pk).update(retry_of=batch)
    except Exception:
        file_delete(file=new_file)
        raise
    new.retry_of = batch
    logger.info("batch %s retries %s", new.id, batch.id)
    return new
