from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Workers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from batches_api import tokens
        from inference.tokens import count_input_tokens

        tokens.register(count_input_tokens)
