"""Retention: delete what has expired (a django-q2 schedule of the task cluster)."""

from __future__ import annotations

import logging

from django.utils import timezone

from batchserver.errors import Conflict
from files_api import services
from files_api.models import File, Upload
from files_api.usage import files_in_use

logger = logging.getLogger(__name__)
CHUNK = 500


def delete_expired_files() -> dict:
    """Files past expires_at (row and bytes), except those still needed (the input of a batch that has not
    finished); and the parts of Uploads that expired before they were completed."""
    now = timezone.now()
    deleted = kept = 0
    expired = File.objects.filter(expires_at__lte=now).order_by("pk")
    after = ""
    while chunk := list(expired.filter(pk__gt=after)[:CHUNK]):
        after = chunk[-1].pk
        needed = files_in_use(file.pk for file in chunk)
        for file in chunk:
            if file.pk in needed:
                kept += 1
                continue
            try:
                services.file_delete(file=file)
                deleted += 1
            except Conflict:  # a batch started using it meanwhile: next time
                kept += 1
    expired_uploads = sum(
        services.upload_expire(upload=upload)
        for upload in Upload.objects.filter(status=Upload.Status.PENDING, expires_at__lte=now)
    )
    if deleted or expired_uploads:
        logger.info("retention: deleted %s expired files, expired %s uploads", deleted, expired_uploads)
    return {"deleted_files": deleted, "kept_files": kept, "expired_uploads": expired_uploads}
