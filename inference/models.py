"""Inference workers, as they report themselves, and the engine loads they did."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class WorkerQuerySet(models.QuerySet):
    def alive(self) -> WorkerQuerySet:
        return self.filter(stopped_at__isnull=True, last_heartbeat_at__gte=stale_before())

    def served_models(self) -> set[str]:
        """Models that some worker of this queryset serves (use on .alive())."""
        return {model for served in self.values_list("served_models", flat=True) for model in served}

    def lost(self) -> WorkerQuerySet:
        return self.filter(stopped_at__isnull=True, last_heartbeat_at__lt=stale_before())


def stale_before():
    return timezone.now() - timedelta(seconds=settings.BATCHSERVER_WORKER_STALE_SECONDS)


class Worker(models.Model):
    """One run of a worker process: created when its serving loop first starts, kept after it stops."""

    name = models.CharField(max_length=200)  # BATCHSERVER_WORKER_NAME; its django-q2 queue is inference-<name>
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    served_models = models.JSONField(default=list)
    loaded_model = models.CharField(max_length=255, null=True, blank=True)
    engine_pids = models.JSONField(default=list)
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)
    current_batches = models.JSONField(default=list)  # ids of batches it holds requests of
    inflight = models.PositiveIntegerField(default=0)
    requests_done = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    tokens_per_second = models.FloatField(default=0.0)  # output tokens/s over the last minute

    objects = WorkerQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["stopped_at", "last_heartbeat_at"])]
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid} on {self.hostname})"

    @property
    def is_alive(self) -> bool:
        return self.stopped_at is None and self.last_heartbeat_at >= stale_before()


class EngineLoad(models.Model):
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="engine_loads")
    model = models.CharField(max_length=255)
    started_at = models.DateTimeField(default=timezone.now)
    seconds = models.FloatField()

    class Meta:
        ordering = ["-started_at"]
