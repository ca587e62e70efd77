from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the operator console as its default site (INSTALLED_APPS names this)."""

    default = False  # batchserver's own config stays BatchserverConfig
    default_site = "batchserver.admin_site.ConsoleSite"


class BatchserverConfig(AppConfig):
    name = "batchserver"
    verbose_name = "API keys and projects"
    default_auto_field = "django.db.models.BigAutoField"
