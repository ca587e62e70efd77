from django.apps import AppConfig


class BatchesApiConfig(AppConfig):
    name = "batches_api"
    verbose_name = "Batches"
    default_auto_field = "django.db.models.BigAutoField"
