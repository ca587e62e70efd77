"""Files in the operator console: list, preview of the first lines (escaped, never interpreted), download, and
delete through files_api.services.file_delete (refused while an unfinished batch reads the file)."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect, StreamingHttpResponse
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import content_disposition_header

from batchserver.admin_kit import ConsoleMedia, admin_change_url, badge, table
from batchserver.errors import ApiError
from files_api.models import File
from files_api.services import file_delete, file_iter_chunks, file_open
from files_api.usage import file_uses

PREVIEW_LINES = 20
PREVIEW_BYTES = 256 * 1024
PREVIEW_LINE_CHARS = 20_000
USED_BY_SHOWN = 3
USED_BY_DETAILED = 50


def preview_lines(file: File, max_lines: int = PREVIEW_LINES, max_bytes: int = PREVIEW_BYTES) -> dict:
    """The first lines of a file as text to show: JSON lines pretty-printed, anything else as it is (decoded with
    replacement characters). Reads at most max_bytes. The template escapes every character of it."""
    try:
        with file_open(file) as fh:
            data = fh.read(max_bytes)
    except Exception as exc:
        return {"lines": [], "error": f"The file's bytes could not be read: {exc.__class__.__name__}."}
    cut_by_bytes = file.bytes > len(data)
    raw_lines = data.split(b"\n")
    if cut_by_bytes and len(raw_lines) > 1:
        raw_lines.pop()  # the last line is cut by the byte limit
    elif raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the file's final newline
    lines = []
    for number, raw in enumerate(raw_lines[:max_lines], start=1):
        text = raw.decode("utf-8", errors="replace")
        try:
            pretty, is_json = json.dumps(json.loads(text), indent=2, ensure_ascii=False), True
        except (ValueError, RecursionError):  # not JSON (or absurdly deep): shown as it is
            pretty, is_json = text, False
        cut = len(pretty) > PREVIEW_LINE_CHARS
        lines.append(
            {"number": number, "text": pretty[:PREVIEW_LINE_CHARS] + ("\n…" if cut else ""), "is_json": is_json}
        )
    more = cut_by_bytes or len(raw_lines) > max_lines
    return {"lines": lines, "more": more, "error": None}


class FileChangeList(ChangeList):
    """Attaches to each file of the page what uses it (files_api.usage), in one round for the whole page."""

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        used = file_uses(file.pk for file in self.result_list)
        for file in self.result_list:
            file.used_by = used.get(file.pk, [])


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ("id", "filename", "purpose", "size", "owner", "created_at", "expiry", "used_by_col")
    list_select_related = ("project",)
    list_filter = ("purpose", ("project", admin.RelatedFieldListFilter), "created_at")
    search_fields = ("id", "filename")
    search_help_text = "A file id, or part of a file name."
    ordering = ("-created_at",)
    list_per_page = 50
    show_full_result_count = False
    actions = ("delete_selected",)
    change_form_template = "admin/files_api/file/change_form.html"
    fields = ("id", "filename", "purpose", "size", "owner", "created_at", "expiry", "used_by_detail")
    readonly_fields = fields

    class Media(ConsoleMedia):
        pass

    def has_add_permission(self, request):
        return False  # files are uploaded through the API

    def has_change_permission(self, request, obj=None):
        return False  # a file is never edited; its page is a read-only view with a preview

    def get_changelist(self, request, **kwargs):
        return FileChangeList

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if term.startswith("file-"):
            return queryset.filter(Q(pk=term) | Q(pk__startswith=term)), False
        return super().get_search_results(request, queryset, search_term)

    # -------------------------------------------------------------------------------------- columns
    @admin.display(description="size", ordering="bytes")
    def size(self, obj: File):
        return format_html(
            '<span class="bs-num" title="{} bytes">{}</span>', f"{obj.bytes:,}", filesizeformat(obj.bytes)
        )

    @admin.display(description="owner", ordering="project__name")
    def owner(self, obj: File):
        return obj.project.name

    @admin.display(description="expires", ordering="expires_at")
    def expiry(self, obj: File):
        if obj.expires_at is None:
            return "never"
        if obj.expires_at <= timezone.now():
            return format_html(
                '<span class="bs-quiet">expired {}</span>',
                timezone.localtime(obj.expires_at).strftime("%Y-%m-%d %H:%M"),
            )
        return timezone.localtime(obj.expires_at).strftime("%Y-%m-%d %H:%M")

    @admin.display(description="used by")
    def used_by_col(self, obj: File):
        used = getattr(obj, "used_by", [])
        if not used:
            return "—"
        shown = format_html_join(
            ", ",
            '<a href="{}" title="{} · {}">{}</a>',
            ((use.admin_url, use.role, use.status, use.object_id) for use in used[:USED_BY_SHOWN]),
        )
        if len(used) > USED_BY_SHOWN:
            return format_html('{} <a href="{}">+{} more</a>', shown, admin_change_url(obj), len(used) - USED_BY_SHOWN)
        return shown

    @admin.display(description="used by")
    def used_by_detail(self, obj: File):
        used = file_uses([obj.pk]).get(obj.pk, [])[:USED_BY_DETAILED]
        if not used:
            return "—"
        return table(
            ((use.admin_url, use.object_id, use.role, badge("status", use.status)) for use in used),
            '<tr><td><a class="bs-mono" href="{}">{}</a></td><td>{}</td><td>{}</td></tr>',
        )

    # -------------------------------------------------------------------------------------- views
    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="{}_{}_download".format(*info),
            ),
        ] + super().get_urls()

    def download_view(self, request, object_id):
        file = self.get_object(request, unquote(object_id))
        if file is None:
            raise Http404(f"No file '{object_id}'.")
        if not self.has_view_permission(request, file):
            raise PermissionDenied
        response = StreamingHttpResponse(file_iter_chunks(file), content_type="application/octet-stream")
        response["Content-Length"] = str(file.bytes)
        response["Content-Disposition"] = content_disposition_header(True, file.filename)
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, no-store"
        return response

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Files", **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        file = self.get_object(request, unquote(object_id))
        context = {"title": "File", **(extra_context or {})}
        if file is not None and self.has_view_permission(request, file):
            context["preview"] = preview_lines(file)
            context["download_url"] = reverse("admin:files_api_file_download", args=[quote(file.pk)])
        return super().change_view(request, object_id, form_url, extra_context=context)

    # -------------------------------------------------------------------------------------- delete
    def delete_model(self, request, obj):
        file_delete(file=obj)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except ApiError as exc:  # e.g. Conflict: an unfinished batch reads this file
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:files_api_file_change", args=[object_id]))

    @admin.action(description="Delete selected files", permissions=["delete"])
    def delete_selected(self, request, queryset):
        """Django's confirmation page, then file_delete for each file; the ones in use are refused by name."""
        if not (request.POST.get("post") and request.POST.get("action") == "delete_selected"):
            return django_delete_selected(self, request, queryset)
        deleted, refused = 0, []
        for file in queryset:
            try:
                file_delete(file=file)
            except ApiError as exc:
                refused.append(exc.message)
            else:
                self.log_deletions(request, [file])
                deleted += 1
        if deleted:
            self.message_user(request, f"Deleted {deleted} file{'s' if deleted != 1 else ''}.", messages.SUCCESS)
        for message in refused[:10]:
            self.message_user(request, message, messages.ERROR)
        return None
