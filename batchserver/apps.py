from django.apps import AppConfig


class BatchserverConfig(AppConfig):
    name = "batchserver"
    verbose_name = "API keys and projects"
    default_auto_field = "django.db.models.BigAutoField"
