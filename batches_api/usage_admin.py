"""The console's usage page: per project, model and day, with filters (project, model, a date range), the totals
of what is shown, a daily chart of tokens and a CSV export of the same rows (batches_api.accounting)."""

from __future__ import annotations

from datetime import date, timedelta

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseBadRequest
from django.urls import path, reverse

from batches_api.accounting import UsageTotals, usage_csv, usage_per_day, usage_totals
from batches_api.models import UsageDay
from batchserver.admin_kit import ConsoleMedia, ReadOnlyAdmin, bar_chart, human_duration


def every_day(per_day: list[tuple[date, UsageTotals]]) -> list[tuple[date, UsageTotals]]:
    """The days from the first to the last, those without usage at zero (a chart's bars, one a day)."""
    if not per_day:
        return []
    known = dict(per_day)
    first, last = per_day[0][0], per_day[-1][0]
    return [
        (first + timedelta(days=i), known.get(first + timedelta(days=i), UsageTotals()))
        for i in range((last - first).days + 1)
    ]


class UsageModelFilter(admin.SimpleListFilter):
    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        models = UsageDay.objects.order_by("model").values_list("model", flat=True).distinct()
        return [(model, model or "—") for model in models]

    def queryset(self, request, queryset):
        return queryset if self.value() is None else queryset.filter(model=self.value())


@admin.register(UsageDay)
class UsageDayAdmin(ReadOnlyAdmin):
    """Read-only: the rows are added by accounting as batches end."""

    list_display = ("day", "project", "model_name", "batches", "requests", "tokens", "engine_time")
    list_filter = (("project", admin.RelatedFieldListFilter), UsageModelFilter, "day")
    list_select_related = ("project",)
    ordering = ("-day", "project__name", "model")
    list_per_page = 100
    change_list_template = "admin/batches_api/usageday/change_list.html"

    class Media(ConsoleMedia):
        pass

    @admin.display(description="model", ordering="model")
    def model_name(self, obj):
        return obj.model or "—"

    @admin.display(description="batches: completed / failed / expired / cancelled")
    def batches(self, obj):
        return f"{obj.batches_completed} / {obj.batches_failed} / {obj.batches_expired} / {obj.batches_cancelled}"

    @admin.display(description="requests: succeeded / failed")
    def requests(self, obj):
        return f"{obj.requests_succeeded:,} / {obj.requests_failed:,}"

    @admin.display(description="tokens: input (cached) / output", ordering="input_tokens")
    def tokens(self, obj):
        return f"{obj.input_tokens:,} ({obj.cached_input_tokens:,}) / {obj.output_tokens:,}"

    @admin.display(description="engine time", ordering="engine_seconds")
    def engine_time(self, obj):
        return human_duration(obj.engine_seconds)

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context is None or "cl" not in context:  # a redirect (bad filter), or an error page
            return response
        rows = context["cl"].queryset
        per_day = usage_per_day(rows)
        context["usage_totals"] = usage_totals(rows)
        context["usage_chart"] = bar_chart(
            [(day.isoformat(), totals.input_tokens + totals.output_tokens) for day, totals in every_day(per_day)],
            label="Tokens (input and output) per day",
            start=per_day[0][0].isoformat() if per_day else "",
            end=per_day[-1][0].isoformat() if per_day else "",
            unit="tokens",
        )
        query = request.GET.copy()
        context["usage_csv_url"] = reverse("admin:batches_api_usageday_csv") + (
            f"?{query.urlencode()}" if query else ""
        )
        context["usage_since"] = request.GET.get("day__gte", "")
        context["usage_until"] = request.GET.get("day__lte", "")
        return response

    def csv_view(self, request):
        """The rows the list shows (same filters), every page of them, as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("Invalid filter: check the dates (YYYY-MM-DD) and the other filters.")
        rows = changelist.get_queryset(request).select_related("project")
        response = HttpResponse(usage_csv(rows.iterator()), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="usage-{date.today().isoformat()}.csv"'
        return response

    def get_urls(self):
        return [
            path("csv/", self.admin_site.admin_view(self.csv_view), name="batches_api_usageday_csv"),
            *super().get_urls(),
        ]
