from django.apps import AppConfig


class BatchesApiConfig(AppConfig):
    name = "batches_api"
    verbose_name = "Batches"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from batches_api.live import record_transition
        from batches_api.selectors import file_uses
        from batches_api.services import sweep
        from batches_api.signals import batch_status_changed
        from batchserver import sweeps
        from files_api import usage

        sweeps.register("batches", sweep)
        usage.register(file_uses)
        batch_status_changed.connect(record_transition, dispatch_uid="batches_api.record_transition", weak=False)
