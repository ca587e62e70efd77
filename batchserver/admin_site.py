"""The operator console's site: its titles, the overview on its index page, and the projects page. This is the
project's wiring (with settings, urls and metrics): the one place of the console that reads every app."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from batches_api.models import Batch
from batches_api.selectors import overview
from batchserver.admin_kit import bar_chart, human_duration
from batchserver.models import ApiKey, Project
from files_api.models import File


class ConsoleSite(admin.AdminSite):
    """The admin site of the project (django.contrib.admin's default site, see batchserver.apps)."""

    site_header = "batchserver console"
    site_title = "batchserver"
    index_title = "Overview"
    site_url = None  # no "view site": the server has no pages besides the API and this console
    index_template = "admin/batchserver/index.html"
    # The console's pages are wide tables: the overview, the app list and the breadcrumbs lead everywhere.
    enable_nav_sidebar = False

    def index(self, request, extra_context=None):
        """The admin index with the overview above the app list (for staff who may see batches)."""
        context = dict(extra_context or {})
        if request.user.is_active and request.user.is_staff and request.user.has_perm("batches_api.view_batch"):
            data = overview()
            oldest = data["oldest_waiting"]
            if oldest is not None:
                data["oldest_wait"] = human_duration((timezone.now() - oldest.created_at).total_seconds())
            data["chart"] = throughput_chart(data["throughput"])
            context["overview"] = data
        return super().index(request, extra_context=context)

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name)
        self.register(Project, ProjectAdmin)


def throughput_chart(throughput) -> str:
    """Output tokens/s per minute over the last hour."""
    return bar_chart(
        [(timezone.localtime(start).strftime("%H:%M"), value) for start, value in throughput.buckets],
        label="Output tokens per second, last hour",
        start="60 min ago",
        end="now",
        unit="tokens/s",
    )


# ------------------------------------------------------------------------------------------------ projects
def _count(queryset, field: str):
    """A correlated COUNT subquery, part of the page query: no query per row."""
    return Coalesce(
        Subquery(
            queryset.filter(**{field: OuterRef("pk")}).order_by().values(field).annotate(n=Count("*")).values("n")[:1],
            output_field=IntegerField(),
        ),
        Value(0),
    )


class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at", "weight", "priority", "active_keys", "batch_count", "file_count")
    list_filter = ("priority",)
    search_fields = ("name",)
    ordering = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "created_at")}),
        (
            "Sharing the engines",
            {
                "fields": ("weight", "priority", "batch_priority_allowed"),
                "description": "Projects with waiting work share each model's engines in proportion to their "
                "weights; high batches are fed first, low ones only on capacity nobody else wants (until "
                "they have waited BATCHSERVER_PRIORITY_AGING_SECONDS).",
            },
        ),
    )
    readonly_fields = ("created_at",)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _active_keys=_count(ApiKey.objects.filter(revoked_at__isnull=True), "project"),
                _batches=_count(Batch.objects.all(), "project"),
                _files=_count(File.objects.all(), "project"),
            )
        )

    @admin.display(description="API keys", ordering="_active_keys")
    def active_keys(self, obj):
        url = reverse("admin:batchserver_apikey_changelist") + f"?project__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj._active_keys)

    @admin.display(description="batches", ordering="_batches")
    def batch_count(self, obj):
        url = reverse("admin:batches_api_batch_changelist") + f"?project__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, f"{obj._batches:,}")

    @admin.display(description="files", ordering="_files")
    def file_count(self, obj):
        url = reverse("admin:files_api_file_changelist") + f"?project__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, f"{obj._files:,}")

    def has_delete_permission(self, request, obj=None):
        return False  # deleting a project would delete its files and batches: not from a click
