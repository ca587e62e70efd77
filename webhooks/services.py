"""Every write of webhooks: endpoints (create, update, delete, rotate their secret, test, enable), events and
their deliveries (the outbox), and the sending of a delivery.

- An event is recorded, with one delivery per subscribed endpoint, inside the transaction of the batch
  transition that raises it (batches_api.signals.batch_status_changed): both commit, or neither does.
- A delivery is sent by a task-cluster task queued when that transaction commits (and, in the task cluster, at
  once by the fast lane of webhooks/sender.py). Each claims the delivery with a conditional update first, so a
  task delivered twice, or a retry the sweep queued meanwhile, does nothing. A failed attempt is retried after
  BATCHSERVER_WEBHOOK_RETRY_SECONDS, with the same webhook-id, until RETRY_WINDOW after the event; the sweep
  queues retries that are due and claims whose sender died.
- An endpoint whose attempts all failed for BATCHSERVER_WEBHOOK_DISABLE_AFTER_DAYS is disabled.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from standardwebhooks import Webhook

from batches_api.models import Batch, new_batch_id
from batches_api.services import enqueue
from batchserver.errors import Conflict, NotFound
from batchserver.ids import new_id
from batchserver.models import Project
from webhooks import crypto, transport
from webhooks.models import EVENT_TYPES, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.sender import fast_lane
from webhooks.transport import Outcome

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24  # 32 base64 characters, no padding
RETRY_WINDOW = timedelta(hours=72)
KEEP_OLD_SECRET = timedelta(hours=24)
# A queued send usually starts within this (behind a busy queue too); the sweep queues a due delivery again only
# after it: a task lost with its process.
ENQUEUE_GRACE = timedelta(seconds=60)
# Finished deliveries (and their events) are kept this long in the log.
LOG_RETENTION = timedelta(days=30)
PRUNE_EVERY_SECONDS = 600
PRUNE_CHUNK = 5000
SEND_TASK = "webhooks.tasks.send_delivery"
S = WebhookDelivery.Status


# ------------------------------------------------------------------------------------------------ secrets
def signing_secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_secret_hint(secret: str) -> str:
    return f"{SECRET_PREFIX}****{secret[-4:]}"


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a delivery is signed with: the current one, and the previous one while it is kept."""
    found = [crypto.decrypt(endpoint.secret, context=endpoint.id)]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        found.append(crypto.decrypt(endpoint.previous_secret, context=endpoint.id))
    return found


def sign(*, webhook_id: str, timestamp: datetime, payload: str, secrets_: list[str]) -> str:
    """The webhook-signature header: one `v1,<base64>` per secret, separated by spaces (Standard Webhooks)."""
    return " ".join(Webhook(secret).sign(webhook_id, timestamp, payload) for secret in secrets_)


# ------------------------------------------------------------------------------------------------ endpoints
def endpoint_create(*, project: Project, url: str, name: str, event_types: list[str]) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret, which is returned here and never again."""
    secret = signing_secret_new()
    endpoint = WebhookEndpoint(
        project=project, url=url, name=name, event_types=event_types, signing_secret_hint=signing_secret_hint(secret)
    )
    endpoint.secret = crypto.encrypt(secret, context=endpoint.id)
    endpoint.updated_at = endpoint.created_at
    endpoint.save(force_insert=True)
    return endpoint, secret


def endpoint_get(*, project: Project, endpoint_id: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(project=project, pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound.object("webhook endpoint", endpoint_id, param="webhook_endpoint_id")
    return endpoint


def endpoint_update(
    *, endpoint: WebhookEndpoint, url: str | None = None, name: str | None = None, event_types: list[str] | None = None
) -> WebhookEndpoint:
    """Change what was given and differs; updated_at moves only then. A new URL enables a disabled endpoint
    again: its owner has pointed it at a receiver that may work."""
    given = {"url": url, "name": name, "event_types": event_types}
    changes: dict = {
        key: value for key, value in given.items() if value is not None and getattr(endpoint, key) != value
    }
    if not changes:
        return endpoint
    if "url" in changes:
        changes.update(disabled_at=None, disabled_reason="", failing_since=None)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(**changes, updated_at=timezone.now())
    endpoint.refresh_from_db()
    return endpoint


def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """The endpoint goes, with its deliveries: a send under way finds its claim gone and records nothing."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()


def endpoint_rotate_secret(
    *, endpoint: WebhookEndpoint, keep_old_secret_active_for_24_hours: bool = False
) -> tuple[WebhookEndpoint, str]:
    secret = signing_secret_new()
    now = timezone.now()
    keep = keep_old_secret_active_for_24_hours
    # Conditional on the secret read: of two rotations at once, one wins and the other is told, so a "kept"
    # old secret is always one that its owner was given.
    rotated = WebhookEndpoint.objects.filter(pk=endpoint.pk, secret=endpoint.secret).update(
        secret=crypto.encrypt(secret, context=endpoint.id),
        signing_secret_hint=signing_secret_hint(secret),
        previous_secret=endpoint.secret if keep else None,
        previous_secret_expires_at=now + KEEP_OLD_SECRET if keep else None,
        updated_at=now,
    )
    if not rotated:
        raise Conflict(
            "The signing secret was rotated by another request at the same moment. Rotate it again to "
            "get a secret you know."
        )
    endpoint.refresh_from_db()
    return endpoint, secret


def endpoint_enable(*, endpoint: WebhookEndpoint) -> bool:
    """Enable a disabled endpoint again (the console). New events reach it; its failed deliveries can be
    redelivered."""
    return bool(
        WebhookEndpoint.objects.filter(pk=endpoint.pk, disabled_at__isnull=False).update(
            disabled_at=None, disabled_reason="", failing_since=None
        )
    )


def endpoint_test(*, endpoint: WebhookEndpoint, event_type: str) -> Outcome:
    """Send a sample event of `event_type` now, signed as every delivery is, and return what the receiver
    answered. It is logged as a delivery and never retried."""
    now = timezone.now()
    claim = _new_claim()
    with transaction.atomic():
        event = _event_create(event_type=event_type, batch_id=new_batch_id(), created_at=now, test=True)
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, event=event, status=S.SENDING, claim=claim, next_attempt_at=now + _claim_ttl()
        )
    outcome = _attempt(delivery)
    _finish(delivery, claim, outcome)
    return outcome


# ------------------------------------------------------------------------------------------------ events
def _event_create(*, event_type: str, batch_id: str, created_at: datetime, test: bool = False) -> WebhookEvent:
    event = WebhookEvent(type=event_type, batch_id=batch_id, created_at=created_at, test=test)
    event.payload = json.dumps(event.body(), separators=(",", ":"))
    event.save(force_insert=True)
    return event


def events_record_batch(*, batch: Batch, status: str) -> WebhookEvent | None:
    """The event of a batch reaching a final status (`batch`: its row as that transition left it), and a delivery
    for every enabled endpoint of its project that subscribed to it. Runs inside the transition's transaction; the
    sends are queued when it commits."""
    status = Batch.Status(status).value
    event_type = f"batch.{status}"
    if event_type not in EVENT_TYPES:
        return None
    batch_id, project_id, stamp = batch.pk, batch.project_id, getattr(batch, Batch.STAMPS[status])
    # Few endpoints per project: the event-type test is done here, the same way on SQLite and PostgreSQL.
    candidates = WebhookEndpoint.objects.filter(project_id=project_id, disabled_at__isnull=True)
    endpoints = [
        endpoint for endpoint in candidates.only("id", "event_types", "disabled_at") if endpoint.wants(event_type)
    ]
    if not endpoints:
        return None
    now = timezone.now()
    event = _event_create(event_type=event_type, batch_id=batch_id, created_at=stamp or now)
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(endpoint=endpoint, event=event, next_attempt_at=now, enqueued_at=now, created_at=now)
            for endpoint in endpoints
        ]
    )
    for delivery in deliveries:
        enqueue(SEND_TASK, delivery.id)
    transaction.on_commit(lambda: fast_lane.submit([delivery.id for delivery in deliveries]))
    return event


# ------------------------------------------------------------------------------------------------ sending
def _new_claim() -> str:
    return new_id("", 8)


def _claim_ttl() -> timedelta:
    """A claim outlives any attempt by far; past it, its sender is taken as dead and the delivery as due."""
    return timedelta(seconds=settings.BATCHSERVER_WEBHOOK_TIMEOUT_SECONDS + 30)


def retry_delay(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt."""
    schedule = settings.BATCHSERVER_WEBHOOK_RETRY_SECONDS
    return timedelta(seconds=schedule[min(attempts, len(schedule)) - 1])


def delivery_send(*, delivery_id: str) -> WebhookDelivery | None:
    """One attempt of a due delivery, claimed first: None when it is not due (sent already, claimed by another
    sender, or waiting for its retry time)."""
    now = timezone.now()
    claim = _new_claim()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status__in=WebhookDelivery.DUE, next_attempt_at__lte=now
    ).update(status=S.SENDING, claim=claim, next_attempt_at=now + _claim_ttl())
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint", "event").get(pk=delivery_id)
    _finish(delivery, claim, _attempt(delivery))
    return delivery


def _attempt(delivery: WebhookDelivery) -> Outcome:
    endpoint, payload = delivery.endpoint, delivery.event.payload
    # A fresh timestamp on every attempt: receivers refuse one older than 5 minutes (replay protection).
    now = timezone.now()
    try:
        signature = sign(
            webhook_id=delivery.id, timestamp=now, payload=payload, secrets_=signing_secrets(endpoint, now)
        )
    except crypto.SecretUnreadable as exc:
        return Outcome(error=str(exc))
    headers = {
        "webhook-id": delivery.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    try:
        return transport.post(
            endpoint.url, payload.encode(), headers, timeout=settings.BATCHSERVER_WEBHOOK_TIMEOUT_SECONDS
        )
    except Exception as exc:  # recorded as a failed attempt (and retried), not left to a lapsing claim
        logger.exception("webhook %s to %s: the attempt failed unexpectedly", delivery.id, endpoint.url)
        return Outcome(error=f"internal error: {type(exc).__name__}: {exc}")


def _finish(delivery: WebhookDelivery, claim: str, outcome: Outcome) -> None:
    """Record an attempt, if the sender still holds the delivery: delivered, a retry scheduled, or given up."""
    now = timezone.now()
    attempts = delivery.attempts + 1
    fields = dict(
        claim=None,
        attempts=F("attempts") + 1,
        last_attempt_at=now,
        enqueued_at=None,
        last_status_code=outcome.status_code,
        last_error=outcome.error,
        last_latency=timedelta(seconds=outcome.latency),
        last_response=outcome.response[:1000],
    )
    retry_at = now + retry_delay(attempts)
    if outcome.ok:
        fields.update(status=S.SUCCEEDED, next_attempt_at=None, delivered_at=now)
    elif delivery.event.test or retry_at > delivery.created_at + RETRY_WINDOW:
        fields.update(status=S.FAILED, next_attempt_at=None)
    else:
        fields.update(status=S.PENDING, next_attempt_at=retry_at)
    with transaction.atomic():
        if not WebhookDelivery.objects.filter(pk=delivery.pk, claim=claim, status=S.SENDING).update(**fields):
            return  # its claim was taken as lost and another sender has it: that one records
        if not delivery.event.test:
            _endpoint_health(delivery.endpoint, outcome, now)
    if not outcome.ok:
        logger.info(
            "webhook %s to %s: attempt %d failed (%s); %s",
            delivery.id,
            delivery.endpoint.url,
            attempts,
            outcome.error or f"status {outcome.status_code}",
            "retry at " + retry_at.isoformat(timespec="seconds") if fields["status"] == S.PENDING else "no retry",
        )


def _endpoint_health(endpoint: WebhookEndpoint, outcome: Outcome, now: datetime) -> None:
    endpoints = WebhookEndpoint.objects.filter(pk=endpoint.pk)
    if outcome.ok:
        endpoints.filter(failing_since__isnull=False).update(failing_since=None)
        return
    endpoints.filter(failing_since__isnull=True).update(failing_since=now)
    days = settings.BATCHSERVER_WEBHOOK_DISABLE_AFTER_DAYS
    reason = (
        f"Every delivery failed for {days:g} days (the last: "
        f"{outcome.error or f'status {outcome.status_code}'}). Fix the receiver, then enable the endpoint "
        "again (the console) or give it a new URL (the API)."
    )[:500]
    if endpoints.filter(disabled_at__isnull=True, failing_since__lte=now - timedelta(days=days)).update(
        disabled_at=now, disabled_reason=reason
    ):
        stopped = WebhookDelivery.objects.filter(endpoint=endpoint, status=S.PENDING).update(
            status=S.FAILED, next_attempt_at=None, last_error="not sent: the endpoint was disabled"
        )
        logger.warning(
            "webhook endpoint %s (%s) disabled: %s %d pending deliveries stopped.",
            endpoint.pk,
            endpoint.url,
            reason,
            stopped,
        )


def delivery_redeliver(*, delivery: WebhookDelivery) -> bool:
    """One more attempt now, with the same webhook-id (the console). False if the delivery is still under way."""
    if not delivery.endpoint.is_enabled:
        raise Conflict(f"The endpoint {delivery.endpoint_id} is disabled: enable it again first.")
    now = timezone.now()
    with transaction.atomic():
        if not WebhookDelivery.objects.filter(pk=delivery.pk, status__in=[S.SUCCEEDED, S.FAILED]).update(
            status=S.PENDING, next_attempt_at=now, enqueued_at=now
        ):
            return False
        enqueue(SEND_TASK, delivery.pk)
    return True


# ------------------------------------------------------------------------------------------------ sweep
@dataclass
class SweepReport:
    enqueued: int = 0
    pruned: int = 0


_next_prune = 0.0


def sweep() -> SweepReport:
    """Queue the deliveries that are due and that no queued task is about to send: retries whose time came,
    and claims whose sender died. One indexed query (status, next_attempt_at); and now and then, prune the log."""
    global _next_prune
    report = SweepReport()
    now = timezone.now()
    due = WebhookDelivery.objects.filter(status__in=WebhookDelivery.DUE, next_attempt_at__lte=now).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - ENQUEUE_GRACE)
    )
    with transaction.atomic():
        # Rows another sweep is queueing right now are skipped, not waited for: it queues them.
        ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True)[:500])
        if ids:
            WebhookDelivery.objects.filter(pk__in=ids).update(enqueued_at=now)
            for delivery_id in ids:
                enqueue(SEND_TASK, delivery_id)
    report.enqueued = len(ids)
    if time.monotonic() >= _next_prune:
        _next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
        report.pruned = prune(before=now - LOG_RETENTION)
    return report


def prune(*, before: datetime) -> int:
    """Delete finished deliveries created before `before` (a chunk at a time), and events left without any."""
    old = WebhookDelivery.objects.filter(created_at__lt=before, status__in=[S.SUCCEEDED, S.FAILED]).values_list(
        "pk", flat=True
    )[:PRUNE_CHUNK]
    deleted, _ = WebhookDelivery.objects.filter(pk__in=list(old)).delete()
    orphans = WebhookEvent.objects.filter(created_at__lt=before, deliveries__isnull=True).values_list("pk", flat=True)[
        :PRUNE_CHUNK
    ]
    WebhookEvent.objects.filter(pk__in=list(orphans)).delete()
    return deleted
