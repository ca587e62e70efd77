"""Owners (projects) and the API keys that act for them."""

from __future__ import annotations

import hashlib
import secrets

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

KEY_PREFIX = "sk-bs-"
KEY_PREFIX_SHOWN = 12  # characters of a key kept in clear, to recognise it in lists
PERM_ADD_TO_EXISTING_PROJECT = "batchserver.add_apikey_to_existing_project"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


class Priority(models.TextChoices):
    """How early a batch's requests are fed to the engines: `high` first, `low` only on capacity nobody else
    wants (until it has waited BATCHSERVER_PRIORITY_AGING_SECONDS, then as `normal`)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Project(models.Model):
    """The owner of files and batches. Every API key belongs to one project.

    Its limits (see batchserver.limits): empty means the server's default (an environment variable; none there
    means unlimited). Enqueued-token limits are per model, in ProjectModelLimit."""

    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Sharing the engines: projects with waiting work get engine slots in proportion to their weights.
    weight = models.PositiveIntegerField(
        default=1, help_text="Share of the engines against other projects with waiting work (default 1)."
    )
    priority = models.CharField(
        max_length=8,
        choices=Priority.choices,
        default=Priority.NORMAL,
        help_text="The priority of the project's batches.",
    )
    batch_priority_allowed = models.BooleanField(
        default=False,
        help_text='Whether a batch may set its own priority with metadata["priority"] (high, normal or low).',
    )
    max_batches_in_flight = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Batches that may be validating, in_progress or finalizing at once; more are refused with a 429. "
        "Empty: the server's default (BATCHSERVER_MAX_BATCHES_IN_FLIGHT).",
    )
    max_stored_bytes = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Bytes of files (and parts of pending Uploads) the project may store; an upload past it is refused "
        "with a 400. Empty: the server's default (BATCHSERVER_MAX_STORED_BYTES).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ProjectModelLimit(models.Model):
    """A project's enqueued-token limit for one model: the input tokens of its batches of that model that are
    validating, in_progress or finalizing may add up to at most this. A model without a row gets the server's
    default (BATCHSERVER_ENQUEUED_TOKENS_LIMIT)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_limits")
    model = models.CharField(max_length=255, help_text="A served model's name, as requests name it.")
    enqueued_tokens = models.PositiveBigIntegerField(
        help_text="Input tokens of this model's unfinished batches, at most (0: no batch of this model runs)."
    )

    class Meta:
        verbose_name = "enqueued-token limit"
        ordering = ["project", "model"]
        constraints = [models.UniqueConstraint(fields=["project", "model"], name="project_model_limit_unique")]

    def __str__(self) -> str:
        return f"{self.project}: {self.model} ≤ {self.enqueued_tokens:,} enqueued tokens"


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A secret that acts for a project. Only its SHA-256 and a short prefix are stored."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=KEY_PREFIX_SHOWN, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    rate_limit_rpm = models.PositiveIntegerField(
        "requests per minute",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Requests to /v1/ this key may send per minute; more get a 429. Empty: the server's default "
        "(BATCHSERVER_RATE_LIMIT_RPM).",
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]
        # A key for an existing project reaches that project's files and batches: a separate, named right.
        # (add_apikey alone creates a key together with a new project, which owns nothing yet.)
        permissions = [(PERM_ADD_TO_EXISTING_PROJECT.split(".")[1], "Can create API keys for existing projects")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @staticmethod
    def generate() -> str:
        return KEY_PREFIX + secrets.token_urlsafe(32)


class RequestRate(models.Model):
    """Where an API key stands against its request rate limit: the theoretical arrival time (GCRA) of its next
    request, in Unix seconds. One row per key, moved by one atomic upsert per request (batchserver.ratelimit)."""

    api_key = models.OneToOneField(ApiKey, on_delete=models.CASCADE, primary_key=True, related_name="+")
    tat = models.FloatField()
    allowed = models.BooleanField(default=True)  # whether the key's last request was let through

    def __str__(self) -> str:
        return f"request rate of key {self.api_key_id}"


class Deployment(models.Model):
    """One row, written by the first `manage.py bootstrap` of a deployment (the one that may create the first
    API key). It outlives every key, so revoking all keys never makes a later start create a new one."""

    first_started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(pk=1), name="deployment_single_row")]

    def __str__(self) -> str:
        return f"deployment started {self.first_started_at:%Y-%m-%d %H:%M}"
