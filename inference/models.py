"""The engine loads an inference worker did (the workers themselves are batches_api.models.Worker: the queue's
consumers)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from batches_api.models import Worker


class EngineLoad(models.Model):
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="engine_loads")
    model = models.CharField(max_length=255)
    started_at = models.DateTimeField(default=timezone.now)
    seconds = models.FloatField()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.model} on {self.worker_id} ({self.seconds:.1f} s)"
