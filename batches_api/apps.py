from django.apps import AppConfig


class BatchesApiConfig(AppConfig):
    name = "batches_api"
    verbose_name = "Batches"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from batches_api.selectors import file_uses
        from batches_api.services import sweep
        from batchserver import sweeps
        from files_api import usage

        sweeps.register("batches", sweep)
        usage.register(file_uses)
