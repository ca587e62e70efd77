"""Webhook endpoints (OpenAI's WebhookEndpoint: a project's URL and the event types it wants), the events that
batches raise, and one delivery per event and endpoint: the outbox that the task cluster works off."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from batchserver.ids import new_id, unix
from batchserver.models import Project

# The event types this server raises: a batch reaching each final status (OpenAI's WebhookBatch* events).
EVENT_TYPES = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")


def new_endpoint_id() -> str:
    return new_id("we_", 16)


def new_event_id() -> str:
    return new_id("evt_", 16)


def new_delivery_id() -> str:
    return new_id("wh_", 16)


class WebhookEndpoint(models.Model):
    """A project's receiver. Its signing secrets are stored encrypted (webhooks/crypto.py): the full secret is
    shown once, in the answer to create or rotate_secret."""

    id = models.CharField(primary_key=True, max_length=64, default=new_endpoint_id, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhook_endpoints")
    name = models.CharField(max_length=256)
    url = models.CharField(max_length=2048)
    event_types = models.JSONField(default=list)
    secret = models.TextField(editable=False)
    # After a rotation with keep_old_secret_active_for_24_hours, deliveries carry a signature with each secret.
    previous_secret = models.TextField(null=True, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    signing_secret_hint = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # Health: the first failed attempt since the last delivered one; disabled once that is too long ago.
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        verbose_name = "webhook endpoint"
        indexes = [models.Index(fields=["project", "created_at", "id"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"

    @property
    def is_enabled(self) -> bool:
        return self.disabled_at is None

    def wants(self, event_type: str) -> bool:
        return self.is_enabled and event_type in self.event_types


class WebhookEvent(models.Model):
    """One event as OpenAI sends it; `payload` holds the exact bytes every delivery of it sends."""

    id = models.CharField(primary_key=True, max_length=64, default=new_event_id, editable=False)
    type = models.CharField(max_length=64)
    batch_id = models.CharField(max_length=64, db_index=True)  # data.id
    created_at = models.DateTimeField(default=timezone.now)
    payload = models.TextField()
    # A sample sent by POST /v1/webhook_endpoints/{id}/test: its batch id names no batch.
    test = models.BooleanField(default=False)

    class Meta:
        verbose_name = "webhook event"

    def __str__(self) -> str:
        return f"{self.type} {self.batch_id}"

    def body(self) -> dict:
        return {
            "id": self.id,
            "object": "event",
            "type": self.type,
            "created_at": unix(self.created_at),
            "data": {"id": self.batch_id},
        }


class WebhookDelivery(models.Model):
    """One event for one endpoint. Its id is the `webhook-id` header, the same on every attempt, so receivers
    can drop a repeat."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for its next attempt (next_attempt_at)
        SENDING = "sending"  # claimed by a sender; taken as lost at next_attempt_at
        SUCCEEDED = "succeeded"  # the receiver answered 2xx
        FAILED = "failed"  # given up: retries ran out, or the endpoint was disabled

    DUE = (Status.PENDING, Status.SENDING)

    id = models.CharField(primary_key=True, max_length=64, default=new_delivery_id, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When someone should act on it: the next attempt (pending), or the moment its claim is lost (sending).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)  # a task for it was queued (the sweep waits)
    claim = models.CharField(max_length=32, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    last_latency = models.DurationField(null=True, blank=True)
    last_response = models.TextField(blank=True, default="")  # the start of the receiver's answer
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),  # the sweep: what is due
            models.Index(fields=["created_at"]),
            models.Index(fields=["endpoint", "status"]),
        ]

    def __str__(self) -> str:
        return self.id
