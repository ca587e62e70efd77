"""The operator console's shared pieces: its CSS and JS, badges, live fragments, durations and tables. Every
app's admin builds its pages from these (the console looks and refreshes the same everywhere)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils.html import format_html, format_html_join

MEDIA_CSS = {"all": ("batchserver/admin.css",)}
MEDIA_JS = ("batchserver/admin.js",)


class ConsoleMedia:
    """The console's Media: `class Media(ConsoleMedia): pass` in a ModelAdmin."""

    css = MEDIA_CSS
    js = MEDIA_JS


class ReadOnlyAdmin(admin.ModelAdmin):
    """Listed and viewed with the model's view permission; never added, changed, deleted or acted on."""

    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def live(key: str, content, block: bool = False) -> str:
    """Content that the page's auto-refresh replaces with its fresh twin (see static/batchserver/admin.js)."""
    return format_html('<{0} data-live="{1}">{2}</{0}>', "div" if block else "span", key, content)


def badge(kind: str, value: str, label: str | None = None) -> str:
    """A coloured label: CSS class bs-<kind>-<value> (see static/batchserver/admin.css)."""
    return format_html(
        '<span class="bs-badge bs-{}-{}">{}</span>', kind, value, label or value.replace("_", " ").capitalize()
    )


def admin_change_url(obj) -> str:
    """The admin page of an object. Primary keys are quoted the admin's way ("_" is its escape character, and
    our ids hold one: batch_…)."""
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(obj.pk)])


def table(rows: Iterable[Sequence], row: str, *, head: Sequence[str] = (), css: str = "bs-table") -> str:
    """An HTML table: `row` is the format_html template of one <tr>, filled (escaped) from each of `rows`."""
    thead = (
        format_html("<thead><tr>{}</tr></thead>", format_html_join("", "<th>{}</th>", ((h,) for h in head)))
        if head
        else ""
    )
    return format_html('<table class="{}">{}<tbody>{}</tbody></table>', css, thead, format_html_join("", row, rows))


def figures(rows: Iterable[tuple[str, int]]) -> str:
    """A table of labelled counts, numbers grouped by thousands."""
    return table(((label, f"{value:,}") for label, value in rows), '<tr><th>{}</th><td class="bs-num">{}</td></tr>')


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    label: str,
    start: str,
    end: str,
    unit: str,
    width: int = 720,
    height: int = 140,
) -> str:
    """An inline SVG bar chart (server-rendered, no JS): one bar per (tooltip label, value), oldest first, the
    peak and 0 on the axis, `start` and `end` under it; `label` describes it for screen readers."""
    top, bottom, left = 12, 18, 44
    plot_w, plot_h = width - left - 4, height - top - bottom
    peak = max((value for _, value in bars), default=0.0)
    slot = plot_w / max(1, len(bars))
    rects = []
    for i, (name, value) in enumerate(bars):
        bar_h = plot_h * value / (peak or 1.0) if value else 0
        rects.append(
            (
                f"{left + i * slot + 0.5:.1f}",
                f"{top + plot_h - bar_h:.1f}",
                f"{min(max(slot - 1.5, 1), 48):.1f}",  # a few bars stay bars
                f"{bar_h:.1f}",
                name,
                f"{value:,.1f}",
                unit,
            )
        )
    return format_html(
        '<svg class="bs-chart" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">'
        '<line class="bs-axis" x1="{l}" y1="{base}" x2="{w}" y2="{base}"></line>'
        '<line class="bs-axis" x1="{l}" y1="{top}" x2="{l}" y2="{base}"></line>'
        '<text x="{lt}" y="{ty}" text-anchor="end">{peak}</text><text x="{lt}" y="{base}" text-anchor="end">0</text>'
        '<text x="{l}" y="{h1}">{start}</text><text x="{w}" y="{h1}" text-anchor="end">{end}</text>'
        "{bars}</svg>",
        w=width,
        h=height,
        label=label,
        l=left,
        lt=left - 4,
        top=top,
        ty=top + 4,
        base=top + plot_h,
        h1=height - 4,
        peak=f"{peak:,.0f}",
        start=start,
        end=end,
        bars=format_html_join(
            "", '<rect class="bs-bar" x="{}" y="{}" width="{}" height="{}"><title>{} · {} {}</title></rect>', rects
        ),
    )
