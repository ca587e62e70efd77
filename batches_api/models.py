"""Batches (OpenAI's Batch object), their requests (one row per line of the input file), and the workers that
claim the requests. The rules that several places need ("succeeded", "terminal", "held by a live worker") are
defined once here, as queryset methods."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from batchserver.ids import new_id
from batchserver.models import Priority, Project
from files_api.models import File


def new_batch_id() -> str:
    return new_id("batch_", 16)


# ------------------------------------------------------------------------------------------------ workers
def stale_before() -> datetime:
    """A worker whose last heartbeat is older than this is lost: its requests are handed out again."""
    return timezone.now() - timedelta(seconds=settings.BATCHSERVER_WORKER_STALE_SECONDS)


def live_worker(prefix: str = "") -> Q:
    """The one definition of a live worker: not stopped, heartbeat fresh. `prefix` reaches it through a
    relation (e.g. "worker__" from a request)."""
    return Q(**{f"{prefix}stopped_at__isnull": True, f"{prefix}last_heartbeat_at__gte": stale_before()})


def gone_worker(relation: str) -> Q:
    """The negation of live_worker through a nullable relation: no worker, a stopped one, or a silent one."""
    return (
        Q(**{f"{relation}__isnull": True})
        | Q(**{f"{relation}__stopped_at__isnull": False})
        | Q(**{f"{relation}__last_heartbeat_at__lt": stale_before()})
    )


class WorkerQuerySet(models.QuerySet):
    def alive(self) -> WorkerQuerySet:
        return self.filter(live_worker())

    def lost(self) -> WorkerQuerySet:
        return self.filter(stopped_at__isnull=True, last_heartbeat_at__lt=stale_before())

    def served_models(self) -> set[str]:
        """Models that some worker of this queryset serves (use on .alive())."""
        return {model for served in self.values_list("served_models", flat=True) for model in served}


class Worker(models.Model):
    """One run of a serving loop (an inference worker process), as it reports itself: created when the loop
    starts, kept after it stops. Requests it holds are handed out again once it is no longer live."""

    name = models.CharField(max_length=200)  # BATCHSERVER_WORKER_NAME
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    served_models = models.JSONField(default=list)
    loaded_models = models.JSONField(default=list)
    ready_at = models.DateTimeField(null=True, blank=True)  # when the models it preloads were loaded
    # The model it is loading, and since when. A load can keep the heartbeat from the database for a while (seen on
    # a first load just after an install): its supervisor waits for a loading worker longer (runworker.LoopWatch).
    loading_model = models.CharField(max_length=255, blank=True, default="")
    loading_since = models.DateTimeField(null=True, blank=True)
    engine_pids = models.JSONField(default=list)  # [[pid, create_time], ...] of its engine processes
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)
    current_batches = models.JSONField(default=list)  # ids of batches it holds requests of
    inflight = models.PositiveIntegerField(default=0)
    requests_done = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    tokens_per_second = models.FloatField(default=0.0)  # output tokens/s over the last minute

    objects = WorkerQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["stopped_at", "last_heartbeat_at"], name="inference_w_stopped_951749_idx")]
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid} on {self.hostname})"

    @property
    def is_alive(self) -> bool:
        return self.stopped_at is None and self.last_heartbeat_at >= stale_before()


# ------------------------------------------------------------------------------------------------ batches
class Batch(models.Model):
    class Status(models.TextChoices):
        VALIDATING = "validating"
        FAILED = "failed"
        IN_PROGRESS = "in_progress"
        FINALIZING = "finalizing"
        COMPLETED = "completed"
        EXPIRED = "expired"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"

    ACTIVE_STATUSES = (Status.VALIDATING, Status.IN_PROGRESS, Status.FINALIZING, Status.CANCELLING)
    # A project's batches in flight: what its enqueued-token and batches-in-flight limits count.
    IN_FLIGHT_STATUSES = (Status.VALIDATING, Status.IN_PROGRESS, Status.FINALIZING)
    FINAL_STATUSES = (Status.FAILED, Status.COMPLETED, Status.EXPIRED, Status.CANCELLED)
    # The timestamp each status sets when a batch enters it.
    STAMPS: ClassVar[dict[str, str]] = {
        Status.IN_PROGRESS: "in_progress_at",
        Status.FINALIZING: "finalizing_at",
        Status.COMPLETED: "completed_at",
        Status.FAILED: "failed_at",
        Status.EXPIRED: "expired_at",
        Status.CANCELLING: "cancelling_at",
        Status.CANCELLED: "cancelled_at",
    }

    id = models.CharField(primary_key=True, max_length=64, default=new_batch_id, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="batches")
    endpoint = models.CharField(max_length=64)
    model = models.CharField(max_length=255, null=True, blank=True)
    completion_window = models.CharField(max_length=16, default="24h")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.VALIDATING)
    # Files are referenced by id and may be deleted later: the batch keeps the id, as OpenAI's does.
    input_file = models.ForeignKey(File, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    output_file = models.ForeignKey(
        File, on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True, related_name="+"
    )
    error_file = models.ForeignKey(
        File, on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True, related_name="+"
    )
    errors = models.JSONField(null=True, blank=True)  # validation errors: [{code, message, param, line}]
    metadata = models.JSONField(null=True, blank=True)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    output_expires_after = models.PositiveIntegerField(null=True, blank=True)  # seconds after creation

    created_at = models.DateTimeField(default=timezone.now)
    in_progress_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    total_requests = models.PositiveIntegerField(default=0)
    completed_requests = models.PositiveIntegerField(default=0)  # succeeded (2xx), as OpenAI counts them
    failed_requests = models.PositiveIntegerField(default=0)  # everything else that ended

    input_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    # The input tokens of its requests as counted when it was validated (the model's tokenizer and chat template):
    # what it enqueues against its project's limit while in flight. `input_tokens` above is what the engine used.
    enqueued_tokens = models.BigIntegerField(default=0, db_default=0)

    # The task-cluster job (validation, or finalizing) that holds the batch: its owner token and heartbeat.
    # A job whose heartbeat stopped is lost, and the sweep enqueues it again (see services.sweep).
    job_owner = models.CharField(max_length=64, null=True, blank=True)
    job_heartbeat_at = models.DateTimeField(null=True, blank=True)
    job_enqueued_at = models.DateTimeField(null=True, blank=True)
    validation_attempts = models.PositiveSmallIntegerField(default=0)
    # A batch made by "retry failed requests" in the admin points at the batch it retries.
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    # The last sequence number given to a result line of the batch (BatchRequest.result_seq): the cursor of
    # GET /v1/batches/{id}/results never goes past it.
    last_result_seq = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "batches"
        indexes = [
            models.Index(fields=["project", "created_at", "id"]),
            models.Index(fields=["status", "model"]),
            models.Index(fields=["input_file"]),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


# ------------------------------------------------------------------------------------------------ requests
class BatchRequestQuerySet(models.QuerySet):
    def open(self) -> BatchRequestQuerySet:
        """Not ended yet: waiting for a worker, or held by one."""
        return self.filter(status__in=BatchRequest.OPEN)

    def terminal(self) -> BatchRequestQuerySet:
        return self.filter(status__in=BatchRequest.TERMINAL)

    def succeeded(self) -> BatchRequestQuerySet:
        """A 2xx response: what OpenAI's request_counts.completed counts."""
        return self.filter(succeeded_q())

    def not_succeeded(self) -> BatchRequestQuerySet:
        """Ended without a 2xx response: a 4xx/5xx response line, or a line in the error file."""
        return self.terminal().exclude(succeeded_q())

    def held_by_live_worker(self) -> BatchRequestQuerySet:
        return self.filter(live_worker("worker__"), status=BatchRequest.Status.RUNNING)

    def claimable(self) -> BatchRequestQuerySet:
        """Waiting for a worker: pending, or running on a worker that is no longer live."""
        return self.filter(
            Q(status=BatchRequest.Status.PENDING) | Q(gone_worker("worker"), status=BatchRequest.Status.RUNNING)
        )


def succeeded_q() -> Q:
    return Q(status=BatchRequest.Status.RESPONDED, status_code__gte=200, status_code__lt=300)


class BatchRequest(models.Model):
    """One request (one input line) of a batch: the unit of work that workers claim."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for a worker
        RUNNING = "running"  # claimed by a worker
        RESPONDED = "responded"  # has a response (any status code): a line in the output file
        ERRORED = "errored"  # never produced a response (cancelled, expired, failed): a line in the error file

    OPEN = (Status.PENDING, Status.RUNNING)
    TERMINAL = (Status.RESPONDED, Status.ERRORED)

    # No index of its own (nor the text-pattern one PostgreSQL adds): the (batch, line) and (batch, status, line)
    # indexes serve every lookup by batch, and each index fewer is less to write at each of a request's three
    # writes (created, claimed, ended).
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="requests", db_index=False)
    line = models.PositiveIntegerField()  # 1-based line number in the input file
    custom_id = models.TextField()
    offset = models.BigIntegerField()  # where the line starts in the input file, in bytes
    length = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="requests")
    # Claims that did not end with a result or a clean give-back (the worker died, or the engine failed).
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=64, null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    # The exact JSONL line for the output file (RESPONDED) or the error file (ERRORED).
    result_line = models.TextField(null=True, blank=True)
    # The line's place in the batch's completion order, given with the line while the batch's row is locked (see
    # services.requests_record): a transaction that commits later always has higher numbers, so a reader that
    # follows the numbers (GET /v1/batches/{id}/results) never skips a line committed late. Numbers may have
    # gaps (a result the worker no longer held is not written); they never repeat.
    result_seq = models.PositiveBigIntegerField(null=True, blank=True)

    objects = BatchRequestQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["batch", "line"], name="batch_request_line_unique"),
            models.UniqueConstraint(
                fields=["batch", "result_seq"],
                condition=Q(result_seq__isnull=False),
                name="batch_request_result_seq_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["batch", "status", "line"]),
            models.Index(fields=["status", "worker"]),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.line} ({self.custom_id})"


# ------------------------------------------------------------------------------------------------ usage
class UsageDay(models.Model):
    """What one project used of one model on one day (UTC), added when each of its batches ends: the batches by
    final status, and the requests with their tokens and engine time on the day each request ended. Kept when
    retention deletes the files and rows it was computed from."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="usage_days")
    model = models.CharField(max_length=255, blank=True)  # "" for batches that failed before naming a model
    day = models.DateField()
    batches_completed = models.PositiveIntegerField(default=0)
    batches_failed = models.PositiveIntegerField(default=0)
    batches_expired = models.PositiveIntegerField(default=0)
    batches_cancelled = models.PositiveIntegerField(default=0)
    requests_succeeded = models.BigIntegerField(default=0)
    requests_failed = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    # Seconds the engines worked on the requests: each request from its claim to its answer (a request sharing
    # the engine with others counts its whole time).
    engine_seconds = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "model", "day"], name="usage_day_unique"),
        ]
        indexes = [models.Index(fields=["day"])]
        verbose_name = "usage"
        verbose_name_plural = "usage"

    def __str__(self) -> str:
        return f"{self.project} · {self.model or '—'} · {self.day}"


# ------------------------------------------------------------------------------------------------ transitions
class BatchTransition(models.Model):
    """The batch object as GET /v1/batches/{id} answered right after a change of status, recorded in the
    transaction of the change: GET /v1/batches/{id}/events sends every status the batch went through, however
    short, from these."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="transitions")
    status = models.CharField(max_length=16, choices=Batch.Status.choices)
    created_at = models.DateTimeField(default=timezone.now)
    body = models.TextField()  # the JSON text of the batch object, byte for byte

    class Meta:
        indexes = [models.Index(fields=["batch", "id"])]

    def __str__(self) -> str:
        return f"{self.batch_id} {self.status}"
