"""Retention: delete what has expired (a django-q2 schedule of the task cluster)."""

from __future__ import annotations

import logging

from django.utils import timezone

from batchserver.errors import Conflict
from files_api import services
from files_api.models import File, Upload

logger = logging.getLogger(__name__)


def delete_expired_files() -> dict:
    """Files past expires_at (row and bytes), except the input of a batch that has not finished, and the parts
    of Uploads that expired before completion."""
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
    if deleted or expired_uploads:
        logger.info("retention: deleted %s expired files, expired %s uploads", deleted, expired_uploads)
    return {"deleted_files": deleted, "kept_files": kept, "expired_uploads": expired_uploads}
