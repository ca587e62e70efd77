"""The operator console's site: its titles, the overview on its index page, and the projects page. This is the
project's wiring (with settings, urls and metrics): the one place of the console that reads every app."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin
from django.db.models import BigIntegerField, Count, IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from batches_api.models import Batch
from batches_api.selectors import overview, project_usage
from batchserver.admin_kit import bar_chart, human_duration, table
from batchserver.limits import batches_in_flight_limit, human_bytes, stored_bytes_limit
from batchserver.models import ApiKey, Project, ProjectModelLimit
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


def _sum(queryset, field: str, summed: str):
    """A correlated SUM subquery, part of the page query."""
    return Coalesce(
        Subquery(
            queryset.filter(**{field: OuterRef("pk")}).order_by().values(field).annotate(n=Sum(summed)).values("n")[:1],
            output_field=BigIntegerField(),
        ),
        Value(0),
    )


class ProjectModelLimitForm(forms.ModelForm):
    class Meta:
        model = ProjectModelLimit
        fields = ("model", "enqueued_tokens")

    def clean_model(self):
        model = self.cleaned_data["model"].strip()
        unchanged = self.instance.pk is not None and self.instance.model == model
        if model not in settings.BATCHSERVER_MODELS and not unchanged:
            raise forms.ValidationError(
                f"No model named “{model}” is served here. Served models: "
                + ", ".join(sorted(settings.BATCHSERVER_MODELS))
                + "."
            )
        return model


class ProjectModelLimitInline(admin.TabularInline):
    """A project's enqueued-token limit per model (a model without one gets BATCHSERVER_ENQUEUED_TOKENS_LIMIT)."""

    model = ProjectModelLimit
    form = ProjectModelLimitForm
    extra = 0
    verbose_name_plural = "enqueued-token limits per model (others: the server's default)"


class ProjectAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "created_at",
        "weight",
        "priority",
        "active_keys",
        "batch_count",
        "in_flight",
        "enqueued",
        "file_count",
        "stored",
    )
    list_filter = ("priority",)
    search_fields = ("name",)
    ordering = ("name",)
    fieldsets = [
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
        ("Limits (empty: the server's default)", {"fields": ("max_batches_in_flight", "max_stored_bytes", "usage")}),
    ]
    readonly_fields = ("created_at", "usage")
    inlines = [ProjectModelLimitInline]

    def get_queryset(self, request):
        in_flight = Batch.objects.filter(status__in=Batch.IN_FLIGHT_STATUSES)
        return (
            super()
            .get_queryset(request)
            .annotate(
                _active_keys=_count(ApiKey.objects.filter(revoked_at__isnull=True), "project"),
                _batches=_count(Batch.objects.all(), "project"),
                _files=_count(File.objects.all(), "project"),
                _in_flight=_count(in_flight, "project"),
                _enqueued=_sum(in_flight, "project", "enqueued_tokens"),
                _stored=_sum(File.objects.all(), "project", "bytes"),
            )
        )

    @admin.display(description="in flight", ordering="_in_flight")
    def in_flight(self, obj):
        limit = batches_in_flight_limit(obj)
        return f"{obj._in_flight:,}" + ("" if limit is None else f" / {limit:,}")

    @admin.display(description="enqueued tokens", ordering="_enqueued")
    def enqueued(self, obj):
        return f"{obj._enqueued:,}"

    @admin.display(description="stored", ordering="_stored")
    def stored(self, obj):
        limit = stored_bytes_limit(obj)
        return human_bytes(obj._stored) + ("" if limit is None else f" / {human_bytes(limit)}")

    @admin.display(description="usage now")
    def usage(self, obj):
        if obj.pk is None:
            return "—"
        usage = project_usage(obj)

        def shown(value, limit, unit=lambda n: f"{n:,}"):
            return f"{unit(value)} of {'unlimited' if limit is None else unit(limit)}"

        rows = [
            ("batches in flight", shown(usage.batches_in_flight, usage.batches_in_flight_limit)),
            ("stored", shown(usage.stored_bytes, usage.stored_bytes_limit, human_bytes)),
            *((f"enqueued tokens, {model}", shown(*values)) for model, values in usage.enqueued_tokens.items()),
        ]
        return table(rows, "<tr><th>{}</th><td>{}</td></tr>")

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
