"""Retention: delete what has expired (a django-q2 schedule of the task cluster)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from batchserver.errors import Conflict
from files_api import services
from files_api.models import File, Upload

logger = logging.getLogger(__name__)
SUCCESS_TASKS_KEPT = timedelta(days=1)  # django-q2's record of successful tasks, shown in the admin


def delete_expired_files() -> dict:
    """Files past expires_at (row and bytes), except the input of a batch that has not finished; the parts of
    Uploads that expired before completion; django-q2's records of successful tasks older than a day."""
    from batches_api.models import Batch

    now = timezone.now()
    needed = Batch.objects.filter(status__in=Batch.ACTIVE_STATUSES).values("input_file_id")
    deleted = kept = 0
    for file in File.objects.filter(expires_at__lte=now).exclude(pk__in=needed).iterator(chunk_size=500):
        try:
            services.file_delete(file=file)
            deleted += 1
        except Conflict:  # a batch started using it meanwhile: next time
            kept += 1
    expired_uploads = 0
    for upload in Upload.objects.filter(status=Upload.Status.PENDING, expires_at__lte=now):
        Upload.objects.filter(pk=upload.pk, status=Upload.Status.PENDING).update(status=Upload.Status.EXPIRED)
        services.delete_upload_parts(upload)
        expired_uploads += 1
    from django_q.models import Success

    Success.objects.filter(stopped__lt=now - SUCCESS_TASKS_KEPT).delete()
    if deleted or expired_uploads:
        logger.info("retention: deleted %s expired files, expired %s uploads", deleted, expired_uploads)
    return {"deleted_files": deleted, "kept_files": kept, "expired_uploads": expired_uploads}
