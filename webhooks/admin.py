"""Webhooks in the operator console: each project's endpoints (their secrets never shown: only the hint) with their
health, and the delivery log (event, attempts, last status code, next retry, latency) with the "redeliver" action.
Both are read-only pages; the actions go through webhooks.services, as the API does."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from batches_api.admin import batch_link
from batchserver.admin_kit import MEDIA_CSS, MEDIA_JS, admin_change_url, human_duration
from batchserver.errors import ApiError
from webhooks import services
from webhooks.models import WebhookDelivery, WebhookEndpoint

CSS = {"all": (*MEDIA_CSS["all"], "webhooks/admin.css")}
RECENT_SHOWN = 20


def delivery_badge(status: str) -> str:
    return format_html('<span class="bs-badge bs-delivery-{}">{}</span>', status, status)


def endpoint_state(endpoint: WebhookEndpoint) -> str:
    if endpoint.disabled_at is None:
        return format_html('<span class="bs-badge bs-endpoint-enabled">enabled</span>')
    return format_html(
        '<span class="bs-badge bs-endpoint-disabled">disabled</span> <span class="bs-quiet">since {}</span>',
        timezone.localtime(endpoint.disabled_at).strftime("%Y-%m-%d %H:%M"),
    )


def short_id(object_id: str) -> str:
    """The start of an id (search takes a prefix); the whole id on hover and on the object's page."""
    shown = object_id[:14] + "…" if len(object_id) > 16 else object_id
    return format_html('<span class="bs-mono" title="{}">{}</span>', object_id, shown)


def when(stamp) -> str:
    """A moment as "in 25s" or "3m 05s ago", with the exact time on hover."""
    if stamp is None:
        return "—"
    seconds = (stamp - timezone.now()).total_seconds()
    shown = f"in {human_duration(seconds)}" if seconds > 0 else f"{human_duration(-seconds)} ago"
    return format_html(
        '<span class="bs-num" title="{}">{}</span>', timezone.localtime(stamp).strftime("%Y-%m-%d %H:%M:%S %Z"), shown
    )


class EnabledFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("enabled", "Enabled"), ("disabled", "Disabled")]

    def queryset(self, request, queryset):
        if self.value() in ("enabled", "disabled"):
            return queryset.filter(disabled_at__isnull=self.value() == "enabled")
        return queryset


# ------------------------------------------------------------------------------------------------ endpoints
@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "url", "events", "state", "failing", "created_at")
    list_select_related = ("project",)
    list_filter = (EnabledFilter, ("project", admin.RelatedFieldListFilter))
    search_fields = ("id", "name", "url", "project__name")
    ordering = ("-created_at",)
    actions = ("enable_endpoints",)
    # Never the secrets themselves, not even encrypted.
    fields = (
        "id",
        "owner",
        "name",
        "url",
        "events",
        "signing_secret_hint",
        "state",
        "disabled_reason",
        "failing",
        "created_at",
        "updated_at",
        "recent_deliveries",
    )
    readonly_fields = fields

    class Media:
        css = CSS
        js = MEDIA_JS

    def has_add_permission(self, request):
        return False  # endpoints are created through the API, which shows their secret to their owner once

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # nothing is edited in place; "enable" is an action

    def has_enable_permission(self, request):
        return request.user.has_perm("webhooks.change_webhookendpoint")

    @admin.display(description="owner", ordering="project__name")
    def owner(self, obj: WebhookEndpoint):
        return obj.project.name

    @admin.display(description="event types")
    def events(self, obj: WebhookEndpoint):
        return ", ".join(obj.event_types)

    @admin.display(description="state", ordering="disabled_at")
    def state(self, obj: WebhookEndpoint):
        return endpoint_state(obj)

    @admin.display(description="failing since", ordering="failing_since")
    def failing(self, obj: WebhookEndpoint):
        return when(obj.failing_since) if obj.failing_since else "—"

    @admin.display(description="recent deliveries")
    def recent_deliveries(self, obj: WebhookEndpoint):
        rows = obj.deliveries.select_related("event").order_by("-created_at")[:RECENT_SHOWN]
        if not rows:
            return "—"
        return format_html(
            '<table class="bs-table"><thead><tr><th>webhook-id</th><th>event</th><th>status</th><th>attempts</th>'
            "<th>last status code</th><th>created</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join(
                "",
                '<tr><td class="bs-mono"><a href="{}">{}</a></td><td>{}</td><td>{}</td>'
                '<td class="bs-num">{}</td><td class="bs-num">{}</td><td>{}</td></tr>',
                (
                    (
                        admin_change_url(d),
                        d.id,
                        d.event.type,
                        delivery_badge(d.status),
                        d.attempts,
                        d.last_status_code or "—",
                        when(d.created_at),
                    )
                    for d in rows
                ),
            ),
        )

    def changelist_view(self, request, extra_context=None):
        disabled = WebhookEndpoint.objects.filter(disabled_at__isnull=False).count()
        if disabled:
            self.message_user(
                request,
                f"{disabled} endpoint{'s are' if disabled != 1 else ' is'} disabled after "
                "failing for days: no event reaches them until they are enabled again.",
                messages.WARNING,
            )
        return super().changelist_view(request, {"title": "Webhook endpoints", **(extra_context or {})})

    @admin.action(description="Enable selected endpoints again", permissions=["enable"])
    def enable_endpoints(self, request, queryset):
        enabled = 0
        for endpoint in queryset.filter(disabled_at__isnull=False):
            if services.endpoint_enable(endpoint=endpoint):
                self.log_change(request, endpoint, "Enabled again.")
                enabled += 1
        self.message_user(request, f"Enabled {enabled} endpoint{'s' if enabled != 1 else ''}.", messages.SUCCESS)


# ------------------------------------------------------------------------------------------------ deliveries
class EventTypeFilter(admin.SimpleListFilter):
    title = "event"
    parameter_name = "event_type"

    def lookups(self, request, model_admin):
        from webhooks.models import EVENT_TYPES

        return [(event_type, event_type) for event_type in EVENT_TYPES]

    def queryset(self, request, queryset):
        return queryset.filter(event__type=self.value()) if self.value() else queryset


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "webhook_id",
        "event_type",
        "batch",
        "endpoint_col",
        "status_col",
        "attempts",
        "status_code",
        "next_retry",
        "latency",
        "created",
    )
    list_select_related = ("endpoint__project", "event")
    list_filter = ("status", EventTypeFilter, ("endpoint__project", admin.RelatedFieldListFilter))
    search_fields = ("id", "event__batch_id", "endpoint__url", "endpoint__name")
    search_help_text = "A webhook-id (wh_…), a batch id, or an endpoint's URL or name."
    ordering = ("-created_at",)
    list_per_page = 50
    show_full_result_count = False
    actions = ("redeliver",)
    fields = (
        "id",
        "event_type",
        "event_batch",
        "endpoint_col",
        "status_col",
        "attempts",
        "status_code",
        "last_error",
        "last_attempt",
        "next_retry",
        "latency",
        "delivered",
        "created",
        "payload",
        "response",
    )
    readonly_fields = fields

    class Media:
        css = CSS
        js = MEDIA_JS

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the log is pruned after 30 days

    def has_change_permission(self, request, obj=None):
        return False  # read-only; "redeliver" is an action

    def has_redeliver_permission(self, request):
        return request.user.has_perm("webhooks.change_webhookdelivery")

    @admin.display(description="webhook-id", ordering="id")
    def webhook_id(self, obj: WebhookDelivery):
        return short_id(obj.id)

    @admin.display(description="event", ordering="event__type")
    def event_type(self, obj: WebhookDelivery):
        return (
            format_html('{} <span class="bs-quiet">(test)</span>', obj.event.type) if obj.event.test else obj.event.type
        )

    @admin.display(description="batch", ordering="event__batch_id")
    def batch(self, obj: WebhookDelivery):
        if obj.event.test:
            return format_html('<span class="bs-quiet" title="{}">sample</span>', obj.event.batch_id)
        url = reverse("admin:batches_api_batch_change", args=[quote(obj.event.batch_id)])
        return format_html('<a href="{}">{}</a>', url, short_id(obj.event.batch_id))

    @admin.display(description="batch")
    def event_batch(self, obj: WebhookDelivery):
        return obj.event.batch_id + " (a sample: no such batch)" if obj.event.test else batch_link(obj.event.batch_id)

    @admin.display(description="endpoint", ordering="endpoint__name")
    def endpoint_col(self, obj: WebhookDelivery):
        endpoint = obj.endpoint
        return format_html(
            '<a href="{}" title="{} ({})">{}</a>{}',
            admin_change_url(endpoint),
            endpoint.url,
            endpoint.project.name,
            endpoint.name,
            format_html(" {}", endpoint_state(endpoint)) if endpoint.disabled_at else "",
        )

    @admin.display(description="status", ordering="status")
    def status_col(self, obj: WebhookDelivery):
        return delivery_badge(obj.status)

    @admin.display(description="last status", ordering="last_status_code")
    def status_code(self, obj: WebhookDelivery):
        if obj.last_status_code is None:
            return format_html(
                '<span class="bs-quiet" title="{}">{}</span>', obj.last_error, "no answer" if obj.attempts else "—"
            )
        return format_html('<span class="bs-num">{}</span>', obj.last_status_code)

    @admin.display(description="next retry", ordering="next_attempt_at")
    def next_retry(self, obj: WebhookDelivery):
        return when(obj.next_attempt_at) if obj.status == WebhookDelivery.Status.PENDING else "—"

    @admin.display(description="latency", ordering="last_latency")
    def latency(self, obj: WebhookDelivery):
        if obj.last_latency is None:
            return "—"
        return format_html('<span class="bs-num">{} ms</span>', f"{obj.last_latency.total_seconds() * 1000:,.0f}")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: WebhookDelivery):
        return when(obj.created_at)

    @admin.display(description="last attempt")
    def last_attempt(self, obj: WebhookDelivery):
        return when(obj.last_attempt_at)

    @admin.display(description="delivered")
    def delivered(self, obj: WebhookDelivery):
        return when(obj.delivered_at)

    @admin.display(description="body sent")
    def payload(self, obj: WebhookDelivery):
        return format_html('<pre class="bs-payload">{}</pre>', json.dumps(json.loads(obj.event.payload), indent=2))

    @admin.display(description="receiver's answer (start)")
    def response(self, obj: WebhookDelivery):
        return format_html('<pre class="bs-payload">{}</pre>', obj.last_response) if obj.last_response else "—"

    def changelist_view(self, request, extra_context=None):
        disabled = list(WebhookEndpoint.objects.filter(disabled_at__isnull=False).values_list("name", flat=True)[:5])
        if disabled:
            url = reverse("admin:webhooks_webhookendpoint_changelist") + "?state=disabled"
            self.message_user(
                request,
                format_html(
                    'Disabled after failing for days: {}. <a href="{}">Endpoints</a>', ", ".join(disabled), url
                ),
                messages.WARNING,
            )
        return super().changelist_view(request, {"title": "Webhook deliveries", **(extra_context or {})})

    @admin.action(description="Redeliver selected deliveries (same webhook-id)", permissions=["redeliver"])
    def redeliver(self, request, queryset):
        queued, busy, refused = 0, 0, []
        for delivery in queryset.select_related("endpoint"):
            try:
                if services.delivery_redeliver(delivery=delivery):
                    self.log_change(request, delivery, "Redelivery queued.")
                    queued += 1
                else:
                    busy += 1
            except ApiError as exc:
                refused.append(exc.message)
        if queued:
            self.message_user(request, f"Queued {queued} redeliver{'ies' if queued != 1 else 'y'}.", messages.SUCCESS)
        if busy:
            self.message_user(
                request,
                f"{busy} selected deliver{'ies are' if busy != 1 else 'y is'} still under way: nothing to redeliver.",
                messages.WARNING,
            )
        for message in sorted(set(refused))[:10]:
            self.message_user(request, message, messages.ERROR)
