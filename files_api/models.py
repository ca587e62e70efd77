"""Files (OpenAI's FileObject) and multi-part Uploads. The bytes live in Django's default storage."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from batchserver.ids import new_id
from batchserver.models import Project


def new_file_id() -> str:
    return new_id("file-")


def new_upload_id() -> str:
    return new_id("upload_")


def new_part_id() -> str:
    return new_id("part_")


class File(models.Model):
    class Purpose(models.TextChoices):
        ASSISTANTS = "assistants"
        BATCH = "batch"
        FINE_TUNE = "fine-tune"
        VISION = "vision"
        USER_DATA = "user_data"
        EVALS = "evals"
        BATCH_OUTPUT = "batch_output"

    # Purposes a client may upload; batch_output files are written by the server only.
    UPLOAD_PURPOSES = (
        Purpose.ASSISTANTS,
        Purpose.BATCH,
        Purpose.FINE_TUNE,
        Purpose.VISION,
        Purpose.USER_DATA,
        Purpose.EVALS,
    )

    id = models.CharField(primary_key=True, max_length=64, default=new_file_id, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="files")
    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    filename = models.CharField(max_length=512)
    bytes = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    storage_name = models.CharField(max_length=255, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["project", "created_at", "id"]),
            models.Index(fields=["expires_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.filename})"


class Upload(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        EXPIRED = "expired"

    id = models.CharField(primary_key=True, max_length=64, default=new_upload_id, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="uploads")
    filename = models.CharField(max_length=512)
    purpose = models.CharField(max_length=32, choices=File.Purpose.choices)
    bytes = models.BigIntegerField()
    mime_type = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    # Expiry of the File this upload becomes, in seconds after its creation (expires_after), if asked.
    file_expires_after = models.PositiveIntegerField(null=True, blank=True)
    file = models.ForeignKey(File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self) -> str:
        return f"{self.id} ({self.filename})"


class UploadPart(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_part_id, editable=False)
    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="parts")
    bytes = models.BigIntegerField()
    storage_name = models.CharField(max_length=255, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.id} of {self.upload_id}"
