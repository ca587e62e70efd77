"""Batches (OpenAI's Batch object) and their requests, one row per line of the input file."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from batchserver.ids import new_id, unix
from batchserver.models import Project
from files_api.models import File


def new_batch_id() -> str:
    return new_id("batch_", 16)


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
    FINAL_STATUSES = (Status.FAILED, Status.COMPLETED, Status.EXPIRED, Status.CANCELLED)

    id = models.CharField(primary_key=True, max_length=64, default=new_batch_id, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="batches")
    endpoint = models.CharField(max_length=64)
    model = models.CharField(max_length=255, null=True, blank=True)
    completion_window = models.CharField(max_length=16, default="24h")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.VALIDATING)
    # Files are referenced by id and may be deleted later: the batch keeps the id, as OpenAI's does.
    input_file = models.ForeignKey(File, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    output_file = models.ForeignKey(File, on_delete=models.DO_NOTHING, db_constraint=False, null=True,
                                    blank=True, related_name="+")
    error_file = models.ForeignKey(File, on_delete=models.DO_NOTHING, db_constraint=False, null=True,
                                   blank=True, related_name="+")
    errors = models.JSONField(null=True, blank=True)  # validation errors: [{code, message, param, line}]
    metadata = models.JSONField(null=True, blank=True)
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
    completed_requests = models.PositiveIntegerField(default=0)
    failed_requests = models.PositiveIntegerField(default=0)

    input_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)

    # Validation runs as a task; a task that was lost is enqueued again (see tasks.sweep).
    validation_attempts = models.PositiveSmallIntegerField(default=0)
    # A batch made by "retry failed requests" in the admin points at the batch it retries.
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")

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

    def to_dict(self) -> dict:
        """The Batch object, exactly as OpenAI sends it."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": unix(self.created_at),
            "in_progress_at": unix(self.in_progress_at),
            "expires_at": unix(self.expires_at),
            "finalizing_at": unix(self.finalizing_at),
            "completed_at": unix(self.completed_at),
            "failed_at": unix(self.failed_at),
            "expired_at": unix(self.expired_at),
            "cancelling_at": unix(self.cancelling_at),
            "cancelled_at": unix(self.cancelled_at),
            "request_counts": {
                "total": self.total_requests,
                "completed": self.completed_requests,
                "failed": self.failed_requests,
            },
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": self.cached_tokens},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
            "metadata": self.metadata,
        }


class BatchRequest(models.Model):
    """One request (one input line) of a batch: the unit of work that workers claim."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"  # has a response (any status code): a line in the output file
        ERRORED = "errored"  # never ran (cancelled, expired, internal error): a line in the error file

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="requests")
    line = models.PositiveIntegerField()  # 1-based line number in the input file
    custom_id = models.TextField()
    offset = models.BigIntegerField()  # where the line starts in the input file, in bytes
    length = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    worker = models.ForeignKey("inference.Worker", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="requests")
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=64, null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    # The exact JSONL line for the output file (status COMPLETED) or the error file (status ERRORED).
    result_line = models.TextField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["batch", "line"], name="batch_request_line_unique")]
        indexes = [
            models.Index(fields=["batch", "status", "line"]),
            models.Index(fields=["status", "worker"]),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.line} ({self.custom_id})"

    @property
    def succeeded(self) -> bool:
        return self.status == self.Status.COMPLETED and self.status_code is not None and self.status_code < 400
