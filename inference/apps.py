from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Workers"
    default_auto_field = "django.db.models.BigAutoField"
