"""Usage accounting: per project, model and day (UTC), what the projects used. A batch's usage is added once, in
the transaction that moves it to its final status (batches_api.services._transition), from the rows of its
requests: so the totals equal the sum of the output files' usage, and stay when retention deletes the files."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date

from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from batches_api.models import Batch, BatchRequest, UsageDay, succeeded_q


@dataclass
class UsageTotals:
    batches_completed: int = 0
    batches_failed: int = 0
    batches_expired: int = 0
    batches_cancelled: int = 0
    requests_succeeded: int = 0
    requests_failed: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    engine_seconds: float = 0.0


COUNTED = tuple(f.name for f in fields(UsageTotals))  # UsageDay's figures, in the order of reports


def usage_add_batch(batch: Batch, status: str) -> None:
    """Add a batch that just ended with `status` to its project's usage. Call inside the transaction of that
    transition: it happens once, as the transition does."""
    batch_id = batch.pk
    days: dict[date, dict] = {timezone.now().date(): {f"batches_{status}": 1}}
    engine_time = ExpressionWrapper(F("finished_at") - F("claimed_at"), output_field=DurationField())
    per_day = (
        BatchRequest.objects.filter(batch_id=batch_id, finished_at__isnull=False)
        .annotate(day=TruncDate("finished_at"))
        .values("day")
        .annotate(
            requests_succeeded=Count("id", filter=succeeded_q()),
            requests_failed=Count("id", filter=~succeeded_q()),
            input_tokens=Sum("input_tokens"),
            cached_input_tokens=Sum("cached_tokens"),
            output_tokens=Sum("output_tokens"),
            engine=Sum(engine_time, filter=Q(status=BatchRequest.Status.RESPONDED, claimed_at__isnull=False)),
        )
        .order_by()
    )
    for row in per_day:
        engine = row.pop("engine")
        day = row.pop("day")
        days.setdefault(day, {}).update(row, engine_seconds=engine.total_seconds() if engine else 0.0)
    _add(batch.project_id, batch.model or "", days)


def _add(project_id: int, model: str, days: dict[date, dict]) -> None:
    """Add figures to one project's and model's row of each day, in one statement: a row is created, or added to
    where it exists (two batches ending at once both add)."""
    quote = connection.ops.quote_name
    table = quote(UsageDay._meta.db_table)
    columns = ", ".join(quote(name) for name in COUNTED)
    added = ", ".join(f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}" for name in COUNTED)
    rows = [
        (project_id, model, connection.ops.adapt_datefield_value(day), *(figures.get(name) or 0 for name in COUNTED))
        for day, figures in days.items()
    ]
    values = ", ".join(["(" + ", ".join(["%s"] * (3 + len(COUNTED))) + ")"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (project_id, model, day, {columns}) VALUES {values} "
            f"ON CONFLICT (project_id, model, day) DO UPDATE SET {added}",
            [value for row in rows for value in row],
        )


def usage_days(
    *, since: date | None = None, until: date | None = None, project: str | None = None, model: str | None = None
) -> QuerySet[UsageDay]:
    """The usage rows within these bounds (days inclusive), newest day first."""
    rows = UsageDay.objects.select_related("project")
    if since is not None:
        rows = rows.filter(day__gte=since)
    if until is not None:
        rows = rows.filter(day__lte=until)
    if project is not None:
        rows = rows.filter(project__name=project)
    if model is not None:
        rows = rows.filter(model=model)
    return rows.order_by("-day", "project__name", "model")


def usage_totals(rows: QuerySet[UsageDay]) -> UsageTotals:
    sums = rows.aggregate(**{name: Sum(name) for name in COUNTED})
    return UsageTotals(**{name: value or 0 for name, value in sums.items()})


def usage_per_day(rows: QuerySet[UsageDay]) -> list[tuple[date, UsageTotals]]:
    """The rows summed per day, oldest first (the console's chart)."""
    per_day = rows.order_by().values("day").annotate(**{name: Sum(name) for name in COUNTED}).order_by("day")
    return [(row.pop("day"), UsageTotals(**row)) for row in per_day]


CSV_COLUMNS = ["day", "project", "model", *COUNTED]


def usage_csv(rows: Iterable[UsageDay]) -> str:
    """The rows as CSV, one line per project, model and day, with a header line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [row.day.isoformat(), row.project.name, row.model, *(_number(getattr(row, name)) for name in COUNTED)]
        )
    return out.getvalue()


def _number(value: int | float) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
