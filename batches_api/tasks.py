"""django-q2 tasks of the task cluster. Thin: ids in, services called. Every one is safe to run twice."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from batches_api import services
from batches_api.models import Batch

logger = logging.getLogger(__name__)

VALIDATION_LOST_AFTER = timedelta(minutes=5)
MAX_VALIDATION_ATTEMPTS = 3


def validate_batch(batch_id: str) -> str | None:
    batch = services.batch_validate(batch_id=batch_id)
    return batch.status if batch else None


def finalize_batch(batch_id: str) -> str | None:
    batch = services.batch_finalize(batch_id=batch_id)
    return batch.status if batch else None


def sweep() -> dict:
    """Every minute: finish what no worker will finish (cancelled or expired batches, finalizing that died
    half-way) and validate again batches whose validation task was lost."""
    now = timezone.now()
    finalized = 0
    due = Batch.objects.filter(
        Q(status=Batch.Status.CANCELLING)
        | Q(status=Batch.Status.FINALIZING)
        | Q(status=Batch.Status.IN_PROGRESS, expires_at__lte=now)
    ).values_list("id", flat=True)
    for batch_id in due:
        services.batch_finalize(batch_id=batch_id)
        finalized += 1
    lost = Batch.objects.filter(status=Batch.Status.VALIDATING, created_at__lt=now - VALIDATION_LOST_AFTER)
    revalidated = 0
    for batch in lost:
        if batch.validation_attempts >= MAX_VALIDATION_ATTEMPTS:
            Batch.objects.filter(pk=batch.pk, status=Batch.Status.VALIDATING).update(
                status=Batch.Status.FAILED, failed_at=now,
                errors=[{"code": "validation_failed", "line": None, "param": None,
                         "message": "Validation of the input file did not finish after "
                                    f"{MAX_VALIDATION_ATTEMPTS} attempts. Check the server's task log, then "
                                    "create the batch again."}])
        else:
            services.batch_validate(batch_id=batch.pk)
            revalidated += 1
    return {"finalized": finalized, "revalidated": revalidated}
