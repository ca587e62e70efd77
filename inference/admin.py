"""Inference workers in the operator console: alive or lost (from their heartbeats), where they run, the model
each has loaded, what it is working on and its throughput. Read-only: workers report themselves."""

from __future__ import annotations

from datetime import datetime

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from batches_api.models import Worker, stale_before
from batchserver.admin_kit import ConsoleMedia, ReadOnlyAdmin, badge, human_duration, live
from inference.models import EngineLoad


def short_time(stamp) -> str:
    """The time of day for today, the date and time before that."""
    local = timezone.localtime(stamp)
    return local.strftime("%H:%M:%S" if local.date() == timezone.localdate() else "%Y-%m-%d %H:%M")


def worker_state(worker: Worker, stale: datetime) -> str:
    if worker.stopped_at is not None:
        return "stopped"
    return "alive" if worker.last_heartbeat_at >= stale else "lost"


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("alive", "Alive"), ("lost", "Lost (no heartbeat)"), ("stopped", "Stopped")]

    def queryset(self, request, queryset):
        stale = stale_before()
        return {
            "alive": lambda: queryset.filter(stopped_at__isnull=True, last_heartbeat_at__gte=stale),
            "lost": lambda: queryset.filter(stopped_at__isnull=True, last_heartbeat_at__lt=stale),
            "stopped": lambda: queryset.filter(stopped_at__isnull=False),
        }.get(self.value(), lambda: queryset)()


class EngineLoadInline(admin.TabularInline):
    model = EngineLoad
    fields = ("model", "started_at", "seconds")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-started_at",)
    verbose_name_plural = "engine loads"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "state",
        "where",
        "loaded_models_col",
        "working_on",
        "inflight_col",
        "throughput",
        "requests_done",
        "last_seen",
        "started",
    )
    list_filter = (StateFilter, "hostname")
    search_fields = ("name", "hostname")
    ordering = ("-last_heartbeat_at",)
    list_per_page = 100
    inlines = (EngineLoadInline,)
    fields = (
        "name",
        "state",
        "where",
        "served_models",
        "loaded_models_col",
        "ready_at",
        "engine_pids",
        "working_on",
        "inflight_col",
        "throughput",
        "requests_done",
        "output_tokens",
        "started_at",
        "last_seen",
        "stopped_at",
    )
    readonly_fields = fields
    change_list_template = "admin/inference/worker/change_list.html"

    class Media(ConsoleMedia):
        pass

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Workers", **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(request, object_id, form_url, {"title": "Worker", **(extra_context or {})})

    @admin.display(description="state", ordering="last_heartbeat_at")
    def state(self, obj: Worker):
        state = worker_state(obj, stale_before())
        return live(f"w{obj.pk}-state", badge("state", state, state))

    @admin.display(description="where", ordering="hostname")
    def where(self, obj: Worker):
        return format_html('{} <span class="bs-quiet">pid {}</span>', obj.hostname, obj.pid)

    @admin.display(description="loaded models")
    def loaded_models_col(self, obj: Worker):
        loaded = ", ".join(obj.loaded_models) if obj.stopped_at is None and obj.loaded_models else "—"
        if obj.stopped_at is None and obj.loading_model and obj.loading_since:
            loaded = format_html(
                '{} <span class="bs-quiet">(loading {} for {})</span>',
                loaded,
                obj.loading_model,
                human_duration((timezone.now() - obj.loading_since).total_seconds()),
            )
        elif obj.stopped_at is None and obj.ready_at is None and obj.served_models:
            loaded = format_html('{} <span class="bs-quiet">(loading)</span>', loaded)
        return live(f"w{obj.pk}-model", loaded)

    @admin.display(description="working on")
    def working_on(self, obj: Worker):
        batches = obj.current_batches if obj.stopped_at is None and isinstance(obj.current_batches, list) else []
        content = format_html_join(
            ", ",
            '<a class="bs-mono" href="{}" title="{}">{}…</a>',
            (
                (reverse("admin:batches_api_batch_change", args=[quote(batch_id)]), batch_id, batch_id[:14])
                for batch_id in batches[:5]
            ),
        )
        if len(batches) > 5:
            content = format_html("{} +{} more", content, len(batches) - 5)
        return live(f"w{obj.pk}-batches", content or "idle")

    @admin.display(description="in flight", ordering="inflight")
    def inflight_col(self, obj: Worker):
        return live(f"w{obj.pk}-inflight", obj.inflight if obj.stopped_at is None else 0)

    @admin.display(description="output tokens/s", ordering="tokens_per_second")
    def throughput(self, obj: Worker):
        value = obj.tokens_per_second if worker_state(obj, stale_before()) == "alive" else 0.0
        return live(f"w{obj.pk}-tps", format_html('<span class="bs-num">{}</span>', f"{value:,.1f}"))

    @admin.display(description="last seen", ordering="last_heartbeat_at")
    def last_seen(self, obj: Worker):
        seen = obj.stopped_at or obj.last_heartbeat_at
        ago = human_duration((timezone.now() - seen).total_seconds())
        return live(
            f"w{obj.pk}-seen",
            format_html(
                '<span class="bs-num" title="{}">{}</span> <span class="bs-quiet">({} ago)</span>',
                timezone.localtime(seen).strftime("%Y-%m-%d %H:%M:%S %Z"),
                short_time(seen),
                ago,
            ),
        )

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Worker):
        return format_html(
            '<span class="bs-num" title="{}">{}</span>',
            timezone.localtime(obj.started_at).strftime("%Y-%m-%d %H:%M:%S %Z"),
            short_time(obj.started_at),
        )
