"""The operator console for batches: a live list, a detail page with the whole story of a batch, and the
cancel and "retry failed requests" actions. Every action goes through batches_api.services, as the API does.

The list stays one page query however many batches there are: everything a row shows is a column of the batch
or of its project (list_select_related); the detail page counts requests with one aggregate, never lists them.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from batches_api import services, usage_admin  # noqa: F401 - usage_admin registers the usage page
from batches_api.models import Batch, BatchRequest, Worker, succeeded_q
from batchserver.admin_kit import ConsoleMedia, admin_change_url, badge, figures, human_duration, live, table
from batchserver.errors import ApiError
from files_api.models import File

TIMELINE = (
    ("created_at", "Created"),
    ("in_progress_at", "In progress"),
    ("finalizing_at", "Finalizing"),
    ("completed_at", "Completed"),
    ("failed_at", "Failed"),
    ("cancelling_at", "Cancelling"),
    ("cancelled_at", "Cancelled"),
    ("expired_at", "Expired"),
    ("expires_at", "Expires (end of the completion window)"),
)
END_STAMPS = ("completed_at", "failed_at", "cancelled_at", "expired_at")
FAILED_SHOWN = 20


# ------------------------------------------------------------------------------------------------ display
def status_badge(status: str) -> str:
    return badge("status", status, Batch.Status(status).label if status in Batch.Status.values else status)


def batch_elapsed(batch: Batch, now: datetime | None = None) -> float:
    """Seconds since the batch started running (or was created), up to its end when it has ended."""
    start = batch.in_progress_at or batch.created_at
    ends = [stamp for stamp in (getattr(batch, name) for name in END_STAMPS) if stamp]
    end = max(ends) if ends and batch.is_final else (now or timezone.now())
    return (end - start).total_seconds()


def batch_eta(batch: Batch, now: datetime | None = None) -> float | None:
    """Seconds left at the pace so far (elapsed × remaining / done), while the batch runs and has progress."""
    done = batch.completed_requests + batch.failed_requests
    if batch.status != Batch.Status.IN_PROGRESS or not done or not batch.total_requests:
        return None
    remaining = max(0, batch.total_requests - done)
    return batch_elapsed(batch, now) * remaining / done


def progress_bar(batch: Batch, wide: bool = False) -> str:
    total = batch.total_requests
    ok, failed = batch.completed_requests, batch.failed_requests
    ok_pct = 100 * ok / total if total else 0
    fail_pct = 100 * failed / total if total else 0
    title = f"{ok:,} succeeded, {failed:,} failed of {total:,}"
    return format_html(
        '<span class="bs-progress{}" role="progressbar" aria-valuemin="0" aria-valuemax="{}" aria-valuenow="{}" '
        'title="{}"><span class="bs-ok" style="width:{}%"></span><span class="bs-fail" style="width:{}%"></span>'
        '</span><span class="bs-progress-text bs-num">{} / {}{}</span>',
        " bs-wide" if wide else "",
        total,
        ok + failed,
        title,
        f"{ok_pct:.2f}",
        f"{fail_pct:.2f}",
        f"{ok + failed:,}",
        f"{total:,}",
        f" ({failed:,} failed)" if failed and wide else "",
    )


def batch_link(batch_id: str) -> str:
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:batches_api_batch_change", args=[quote(batch_id)]), batch_id
    )


# ------------------------------------------------------------------------------------------------ filters
class ModelFilter(admin.SimpleListFilter):
    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        used = Batch.objects.exclude(model__isnull=True).order_by().values_list("model", flat=True).distinct()
        names = sorted(set(used) | set(settings.BATCHSERVER_MODELS))
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(model=value) if value else queryset


# ------------------------------------------------------------------------------------------------ admin
@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = (
        "batch_id",
        "owner",
        "model",
        "endpoint_col",
        "status_col",
        "progress_col",
        "tokens_col",
        "created_col",
        "elapsed_col",
        "eta_col",
    )
    list_display_links = ("batch_id",)
    list_select_related = ("project",)
    list_filter = ("status", ModelFilter, ("project", admin.RelatedFieldListFilter), "created_at")
    search_fields = ("id",)  # see get_search_results: ids, file ids and metadata values
    search_help_text = (
        "A batch id, a file id (input, output or error), a metadata value, or key=value for one metadata key."
    )
    ordering = ("-created_at",)
    list_per_page = 50
    show_full_result_count = False
    actions = ("cancel_batches", "retry_failed_requests")
    change_form_template = "admin/batches_api/batch/change_form.html"
    change_list_template = "admin/batches_api/batch/change_list.html"
    readonly_fields = (
        "id",
        "owner",
        "status_detail",
        "model",
        "endpoint",
        "completion_window",
        "lineage",
        "progress_detail",
        "request_breakdown",
        "usage",
        "timeline",
        "files",
        "errors_table",
        "failed_requests_table",
        "metadata_table",
    )

    class Media(ConsoleMedia):
        pass

    # -------------------------------------------------------------------------------------- permissions
    def has_add_permission(self, request):
        return False  # batches are created through the API (or by "retry failed requests")

    def has_delete_permission(self, request, obj=None):
        return False  # a batch's history is kept; its files can be deleted from Files

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name == "batches_api_batch_changelist":
            queryset = queryset.defer("errors")  # up to 100 validation errors per row: the list never shows them
        return queryset

    # -------------------------------------------------------------------------------------- list columns
    @admin.display(description="owner", ordering="project__name")
    def owner(self, obj: Batch):
        return obj.project.name

    @admin.display(description="id", ordering="id")
    def batch_id(self, obj: Batch):
        """The first 8 hex digits (search takes a prefix); the whole id on hover and on the batch's page."""
        short = obj.pk[:14] + "…" if len(obj.pk) > 16 else obj.pk
        return format_html('<span class="bs-id" title="{}">{}</span>', obj.pk, short)

    @admin.display(description="endpoint", ordering="endpoint")
    def endpoint_col(self, obj: Batch):
        return format_html(
            '<span class="bs-quiet" title="{}">{}</span>', obj.endpoint, obj.endpoint.removeprefix("/v1/")
        )

    @admin.display(description="created", ordering="created_at")
    def created_col(self, obj: Batch):
        stamp = timezone.localtime(obj.created_at)
        shown = stamp.strftime("%m-%d %H:%M" if stamp.year == timezone.localtime().year else "%Y-%m-%d")
        return format_html('<span class="bs-num" title="{}">{}</span>', stamp.strftime("%Y-%m-%d %H:%M:%S %Z"), shown)

    @admin.display(description="status", ordering="status")
    def status_col(self, obj: Batch):
        return live(f"{obj.pk}-status", status_badge(obj.status))

    @admin.display(description="progress")
    def progress_col(self, obj: Batch):
        return live(f"{obj.pk}-progress", progress_bar(obj))

    @admin.display(description="tokens in/out")
    def tokens_col(self, obj: Batch):
        return live(
            f"{obj.pk}-tokens",
            format_html('<span class="bs-num">{} / {}</span>', f"{obj.input_tokens:,}", f"{obj.output_tokens:,}"),
        )

    @admin.display(description="elapsed")
    def elapsed_col(self, obj: Batch):
        return live(
            f"{obj.pk}-elapsed", format_html('<span class="bs-num">{}</span>', human_duration(batch_elapsed(obj)))
        )

    @admin.display(description="ETA")
    def eta_col(self, obj: Batch):
        eta = batch_eta(obj)
        return live(
            f"{obj.pk}-eta",
            format_html('<span class="bs-num">{}</span>', human_duration(eta)) if eta is not None else "—",
        )

    # -------------------------------------------------------------------------------------- search
    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.startswith("batch_"):
            return queryset.filter(Q(pk=term) | Q(pk__startswith=term) | Q(retry_of_id=term)), False
        if term.startswith("file-"):
            return queryset.filter(Q(input_file_id=term) | Q(output_file_id=term) | Q(error_file_id=term)), False
        if "=" in term:
            key, _, value = term.partition("=")
            key, value = key.strip(), value.strip()
            if key:
                return (
                    queryset.annotate(_meta_value=KeyTextTransform(key, "metadata")).filter(_meta_value=value),
                    False,
                )
        return (
            queryset.annotate(_meta_text=Cast("metadata", TextField())).filter(
                Q(_meta_text__icontains=term) | Q(pk=term)
            ),
            False,
        )

    # -------------------------------------------------------------------------------------- detail page
    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ("id", "owner", "status_detail", "model", "endpoint", "completion_window", "lineage")}),
            ("Progress", {"fields": ("progress_detail", "request_breakdown", "usage")}),
            ("Timeline", {"fields": ("timeline",)}),
            ("Files", {"fields": ("files",)}),
        ]
        if obj is not None and obj.errors:
            fieldsets.append(("Validation errors", {"fields": ("errors_table",)}))
        if obj is not None and (obj.failed_requests or obj.status in Batch.ACTIVE_STATUSES):
            fieldsets.append((f"Failed requests (first {FAILED_SHOWN})", {"fields": ("failed_requests_table",)}))
        fieldsets.append(("Metadata", {"fields": ("metadata_table",)}))
        return fieldsets

    @admin.display(description="status")
    def status_detail(self, obj: Batch):
        badge = status_badge(obj.status)
        if obj.status == Batch.Status.IN_PROGRESS and obj.model not in Worker.objects.alive().served_models():
            badge = format_html(
                '{} <span class="bs-warning">Waiting: no live worker serves {}. Start one with '
                "<code>BATCHSERVER_WORKER_MODELS={} python manage.py runworker</code>.</span>",
                badge,
                obj.model,
                obj.model,
            )
        return live("status", badge)

    @admin.display(description="retries")
    def lineage(self, obj: Batch):
        parts = []
        if obj.retry_of_id:
            parts.append(format_html("Retry of {}", batch_link(obj.retry_of_id)))
        retries = list(obj.retries.order_by("created_at").values_list("id", flat=True)[:20])
        if retries:
            parts.append(format_html("Retried as {}", mark_safe(", ".join(batch_link(r) for r in retries))))
        return live("lineage", mark_safe("<br>".join(parts)) if parts else "—", block=True)

    @admin.display(description="requests")
    def progress_detail(self, obj: Batch):
        now = timezone.now()
        eta = batch_eta(obj, now)
        text = format_html(
            '<div>{}</div><div class="bs-quiet">{} total · {} succeeded · {} failed · elapsed {}{}</div>',
            progress_bar(obj, wide=True),
            f"{obj.total_requests:,}",
            f"{obj.completed_requests:,}",
            f"{obj.failed_requests:,}",
            human_duration(batch_elapsed(obj, now)),
            f" · about {human_duration(eta)} left" if eta is not None else "",
        )
        return live("progress", text, block=True)

    @admin.display(description="by state")
    def request_breakdown(self, obj: Batch):
        S = BatchRequest.Status
        counts = (
            BatchRequest.objects.filter(batch=obj)
            .order_by()
            .aggregate(
                pending=Count("id", filter=Q(status=S.PENDING)),
                running=Count("id", filter=Q(status=S.RUNNING)),
                succeeded=Count("id", filter=succeeded_q()),
                failed=Count("id", filter=Q(status=S.RESPONDED) & ~succeeded_q()),
                not_run=Count("id", filter=Q(status=S.ERRORED)),
            )
        )
        return live(
            "breakdown",
            figures(
                [
                    ("Pending", counts["pending"]),
                    ("Running", counts["running"]),
                    ("Succeeded (2xx)", counts["succeeded"]),
                    ("Failed (non-2xx response)", counts["failed"]),
                    ("Not run (error file)", counts["not_run"]),
                ]
            ),
            block=True,
        )

    @admin.display(description="usage")
    def usage(self, obj: Batch):
        return live(
            "usage",
            figures(
                [
                    ("Input tokens", obj.input_tokens),
                    ("cached", obj.cached_tokens),
                    ("Output tokens", obj.output_tokens),
                    ("reasoning", obj.reasoning_tokens),
                    ("Total tokens", obj.input_tokens + obj.output_tokens),
                    ("Enqueued (counted when validated)", obj.enqueued_tokens),
                ]
            ),
            block=True,
        )

    @admin.display(description="status timeline")
    def timeline(self, obj: Batch):
        rows = []
        for field, label in TIMELINE:
            stamp = getattr(obj, field)
            offset = ""
            if stamp and field not in ("created_at", "expires_at"):
                offset = f"+{human_duration((stamp - obj.created_at).total_seconds())}"
            rows.append(
                (
                    " bs-pending" if not stamp else "",
                    label,
                    timezone.localtime(stamp).strftime("%Y-%m-%d %H:%M:%S %Z") if stamp else "—",
                    offset,
                )
            )
        return live(
            "timeline",
            table(rows, '<tr class="{}"><th>{}</th><td class="bs-num">{}</td><td class="bs-quiet bs-num">{}</td></tr>'),
            block=True,
        )

    @admin.display(description="files")
    def files(self, obj: Batch):
        ids = [("Input", obj.input_file_id), ("Output", obj.output_file_id), ("Errors", obj.error_file_id)]
        existing = {f.pk: f for f in File.objects.filter(pk__in=[i for _, i in ids if i])}
        rows = []
        for label, file_id in ids:
            if not file_id:
                rows.append(format_html('<tr class="bs-pending"><th>{}</th><td>—</td><td></td></tr>', label))
            elif file_id not in existing:
                rows.append(
                    format_html(
                        '<tr><th>{}</th><td class="bs-mono">{}</td><td class="bs-quiet">deleted</td></tr>',
                        label,
                        file_id,
                    )
                )
            else:
                file = existing[file_id]
                rows.append(
                    format_html(
                        '<tr><th>{}</th><td class="bs-mono">{}</td><td class="bs-links"><a href="{}">view</a>'
                        '<a href="{}">download</a><span class="bs-quiet">{} · {}</span></td></tr>',
                        label,
                        file.pk,
                        reverse("admin:files_api_file_change", args=[quote(file.pk)]),
                        reverse("admin:files_api_file_download", args=[quote(file.pk)]),
                        file.filename,
                        _filesize(file.bytes),
                    )
                )
        return live("files", table(((row,) for row in rows), "{}"), block=True)

    @admin.display(description="errors")
    def errors_table(self, obj: Batch):
        rows = (
            (
                e.get("line") if e.get("line") is not None else "—",
                e.get("code") or "",
                e.get("message") or "",
                e.get("param") or "",
            )
            for e in obj.errors or []
            if isinstance(e, dict)
        )
        return table(
            rows,
            '<tr><td class="bs-num">{}</td><td class="bs-mono">{}</td><td class="bs-msg">{}</td>'
            '<td class="bs-mono">{}</td></tr>',
            head=("line", "code", "message", "param"),
            css="bs-table bs-errors",
        )

    @admin.display(description="requests")
    def failed_requests_table(self, obj: Batch):
        failed = (
            BatchRequest.objects.filter(batch=obj)
            .not_succeeded()
            .order_by("line")
            .values_list("line", "custom_id", "status_code", "error_code")[:FAILED_SHOWN]
        )
        rows = (
            (line, custom_id, status_code if status_code is not None else (error_code or ""))
            for line, custom_id, status_code, error_code in failed
        )
        return live(
            "failed",
            table(
                rows,
                '<tr><td class="bs-num">{}</td><td class="bs-mono">{}</td><td class="bs-mono">{}</td></tr>',
                head=("line", "custom_id", "status / error"),
            ),
            block=True,
        )

    @admin.display(description="metadata")
    def metadata_table(self, obj: Batch):
        if not obj.metadata:
            return "—"
        items = obj.metadata.items() if isinstance(obj.metadata, dict) else []
        return table(items, '<tr><th class="bs-mono">{}</th><td class="bs-msg">{}</td></tr>')

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Batches", **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        batch = self.get_object(request, unquote(object_id))
        context = {
            "title": "Batch",
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
        }
        if batch is not None:
            context.update(
                batch_live=batch.status in Batch.ACTIVE_STATUSES,
                can_cancel=batch.status in (Batch.Status.VALIDATING, Batch.Status.IN_PROGRESS),
                can_retry=batch.is_final and batch.total_requests > batch.completed_requests,
            )
        context.update(extra_context or {})
        return super().change_view(request, object_id, form_url, extra_context=context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST":  # nothing on this page is edited in place; actions have their own URLs
            return HttpResponseNotAllowed(["GET"])
        return super().changeform_view(request, object_id, form_url, extra_context)

    # -------------------------------------------------------------------------------------- actions
    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<path:object_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name=f"{prefix}_cancel"),
            path("<path:object_id>/retry/", self.admin_site.admin_view(self.retry_view), name=f"{prefix}_retry"),
        ] + super().get_urls()

    def _object_for_action(self, request, object_id) -> Batch:
        if request.method != "POST":
            raise PermissionDenied  # actions change state: POST (with its CSRF token) only
        batch = self.get_object(request, unquote(object_id))
        if batch is None:
            raise Http404(f"No batch '{object_id}'.")
        if not self.has_change_permission(request, batch):
            raise PermissionDenied
        return batch

    def cancel_view(self, request, object_id):
        batch = self._object_for_action(request, object_id)
        try:
            batch = services.batch_cancel(batch=batch)
        except ApiError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.log_change(request, batch, f"Cancelled (now {batch.status}).")
            self.message_user(request, f"Batch {batch.id} is {batch.status}.", messages.SUCCESS)
        return HttpResponseRedirect(admin_change_url(batch))

    def retry_view(self, request, object_id):
        batch = self._object_for_action(request, object_id)
        try:
            new = services.batch_retry_failed(batch=batch)
        except ApiError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(admin_change_url(batch))
        self.log_change(request, batch, f"Retried its failed requests as {new.id}.")
        self.message_user(
            request,
            format_html("Created batch {} from the failed and unrun requests of {}.", batch_link(new.id), batch.id),
            messages.SUCCESS,
        )
        return HttpResponseRedirect(admin_change_url(new))

    @admin.action(description="Cancel selected batches", permissions=["change"])
    def cancel_batches(self, request, queryset):
        done, refused = [], []
        skipped = queryset.exclude(status__in=Batch.ACTIVE_STATUSES).count()
        for batch in queryset.filter(status__in=Batch.ACTIVE_STATUSES).iterator():
            try:
                batch = services.batch_cancel(batch=batch)
            except ApiError as exc:
                refused.append(f"{batch.id}: {exc.message}")
            else:
                self.log_change(request, batch, f"Cancelled (now {batch.status}).")
                done.append(batch.id)
        if done:
            self.message_user(
                request, f"Cancelled {len(done)} batch{'es' if len(done) != 1 else ''}.", messages.SUCCESS
            )
        if skipped:
            self.message_user(
                request,
                f"{skipped} selected batch{'es have' if skipped != 1 else ' has'} already "
                "finished and cannot be cancelled.",
                messages.WARNING,
            )
        for message in refused[:10]:
            self.message_user(request, message, messages.ERROR)

    @admin.action(description="Retry failed requests (new batch)", permissions=["change"])
    def retry_failed_requests(self, request, queryset):
        created, refused = [], []
        for batch in queryset.select_related("project").iterator():
            try:
                new = services.batch_retry_failed(batch=batch)
            except ApiError as exc:
                refused.append(exc.message)
            else:
                self.log_change(request, batch, f"Retried its failed requests as {new.id}.")
                created.append(new.id)
        if created:
            self.message_user(
                request,
                format_html(
                    "Created {} retry batch{}: {}",
                    len(created),
                    "es" if len(created) != 1 else "",
                    mark_safe(", ".join(batch_link(i) for i in created)),
                ),
                messages.SUCCESS,
            )
        for message in refused[:10]:
            self.message_user(request, message, messages.ERROR)
        if len(refused) > 10:
            self.message_user(request, f"… and {len(refused) - 10} more could not be retried.", messages.ERROR)


def _filesize(size: int) -> str:
    from django.template.defaultfilters import filesizeformat

    return filesizeformat(size)
