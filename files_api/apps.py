from django.apps import AppConfig


class FilesApiConfig(AppConfig):
    name = "files_api"
    verbose_name = "Files"
    default_auto_field = "django.db.models.BigAutoField"
