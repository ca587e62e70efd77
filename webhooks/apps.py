from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from batches_api.models import Batch
        from batches_api.signals import batch_status_changed
        from batchserver import sweeps
        from webhooks import services

        def record_event(sender, *, batch: Batch, status: str, **kwargs) -> None:
            # Inside the transition's transaction, and not guarded: an event that cannot be recorded rolls the
            # transition back (it is tried again), rather than a batch ending without its event.
            services.events_record_batch(batch=batch, status=status)

        batch_status_changed.connect(record_event, dispatch_uid="webhooks.record_event", weak=False)
        sweeps.register("webhooks", services.sweep)
