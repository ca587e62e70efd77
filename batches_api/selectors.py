"""Reads: for the operator console (the admin overview; each one aggregate query, whatever the row counts), and
for the live views of a batch (its result lines so far, its transitions)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce, TruncMinute
from django.utils import timezone

from batches_api.models import Batch, BatchRequest, BatchTransition, Worker, stale_before
from batches_api.services import result_file_line
from batchserver.errors import InvalidRequest
from batchserver.limits import batches_in_flight_limit, enqueued_tokens_limit, stored_bytes_limit
from batchserver.models import Project
from files_api.services import stored_bytes
from files_api.usage import SHOWN, FileUse

CHART_WINDOW = timedelta(hours=1)
CHART_BUCKET = timedelta(minutes=1)
SHARE_WINDOW = timedelta(minutes=10)


def batches_by_status() -> list[dict]:
    """Every status with its number of batches (zero included), in lifecycle order."""
    counts = dict(Batch.objects.order_by().values_list("status").annotate(n=Count("id")))
    return [{"status": value, "label": label, "count": counts.get(value, 0)} for value, label in Batch.Status.choices]


def requests_pending_per_model() -> list[dict]:
    """Requests waiting for (pending) or held by (running) a worker, per model of their batch."""
    S = BatchRequest.Status
    rows = (
        BatchRequest.objects.filter(status__in=[S.PENDING, S.RUNNING])
        .order_by()
        .values("batch__model")
        .annotate(pending=Count("id", filter=Q(status=S.PENDING)), running=Count("id", filter=Q(status=S.RUNNING)))
    )
    return sorted(
        ({"model": row["batch__model"], "pending": row["pending"], "running": row["running"]} for row in rows),
        key=lambda row: (-row["pending"] - row["running"], row["model"] or ""),
    )


@dataclass
class Throughput:
    since: datetime
    buckets: list[tuple[datetime, float]]  # (start of the minute, output tokens/s in it), oldest first
    total_tokens: int

    @property
    def average(self) -> float:
        return self.total_tokens / CHART_WINDOW.total_seconds()

    @property
    def peak(self) -> float:
        return max((value for _, value in self.buckets), default=0.0)

    @property
    def recent(self) -> float:
        """The mean of the last five one-minute buckets (the current, partial minute included)."""
        return sum(value for _, value in self.buckets[-5:]) / min(5, len(self.buckets) or 1)


def answered_since(since: datetime):
    """Requests the engines answered since then. finished_at has no index of its own: they are reached through
    their batches (the ones still running, or that ended since), then the (batch, status, line) index."""
    recent = Batch.objects.filter(
        Q(status__in=Batch.ACTIVE_STATUSES)
        | Q(completed_at__gte=since)
        | Q(cancelled_at__gte=since)
        | Q(expired_at__gte=since)
        | Q(finalizing_at__gte=since)
    ).values("id")
    return BatchRequest.objects.filter(batch__in=recent, status=BatchRequest.Status.RESPONDED, finished_at__gte=since)


def output_throughput(now: datetime | None = None) -> Throughput:
    """Output tokens/s per minute over the last hour, from the requests' finished_at and output_tokens."""
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0) + CHART_BUCKET
    since = end - CHART_WINDOW
    rows = (
        answered_since(since)
        .order_by()
        .annotate(minute=TruncMinute("finished_at"))
        .values("minute")
        .annotate(tokens=Sum("output_tokens"))
    )
    per_minute = {row["minute"]: row["tokens"] or 0 for row in rows}
    seconds = CHART_BUCKET.total_seconds()
    buckets = []
    start = since
    while start < end:
        buckets.append((start, per_minute.get(start, 0) / seconds))
        start += CHART_BUCKET
    return Throughput(since=since, buckets=buckets, total_tokens=sum(per_minute.values()))


@dataclass
class EngineShare:
    """A project's part of one model's engines (batches_api.scheduling decides it)."""

    model: str
    project: str
    weight: int
    waiting: int  # requests pending in its in-progress batches
    running: int  # requests in flight on any worker
    answered: int  # requests the engines answered for it over SHARE_WINDOW
    share: float  # its part of the model's answered requests over SHARE_WINDOW (0-1)


def engine_shares(now: datetime | None = None) -> list[EngineShare]:
    """Per model, each project with work waiting or running, or answered over the last SHARE_WINDOW."""
    since = (now or timezone.now()) - SHARE_WINDOW
    S = BatchRequest.Status
    figures: dict[tuple[str, str], dict] = {}
    fields = ("batch__model", "batch__project__name", "batch__project__weight")
    for model, project, weight, waiting, running in (
        BatchRequest.objects.filter(status__in=[S.PENDING, S.RUNNING], batch__status=Batch.Status.IN_PROGRESS)
        .order_by()
        .values_list(*fields)
        .annotate(waiting=Count("id", filter=Q(status=S.PENDING)), running=Count("id", filter=Q(status=S.RUNNING)))
    ):
        figures[(model, project)] = {"weight": weight, "waiting": waiting, "running": running, "answered": 0}
    for model, project, weight, answered in (
        answered_since(since).order_by().values_list(*fields).annotate(n=Count("id"))
    ):
        row = figures.setdefault((model, project), {"weight": weight, "waiting": 0, "running": 0})
        row["answered"] = answered
    per_model: dict[str, int] = {}
    for (model, _), row in figures.items():
        per_model[model] = per_model.get(model, 0) + row["answered"]
    return [
        EngineShare(
            model=model or "",
            project=project,
            share=row["answered"] / per_model[model] if per_model[model] else 0.0,
            **row,
        )
        for (model, project), row in sorted(figures.items(), key=lambda item: (item[0][0] or "", item[0][1]))
    ]


def oldest_waiting_batch() -> Batch | None:
    """The oldest batch that is not finished and still has work to do (validating, or in progress)."""
    return (
        Batch.objects.filter(status__in=[Batch.Status.VALIDATING, Batch.Status.IN_PROGRESS])
        .select_related("project")
        .order_by("created_at")
        .first()
    )


def overview() -> dict:
    workers = Worker.objects.filter(stopped_at__isnull=True).order_by()
    alive_since = stale_before()
    counts = workers.aggregate(
        alive=Count("id", filter=Q(last_heartbeat_at__gte=alive_since)),
        lost=Count("id", filter=Q(last_heartbeat_at__lt=alive_since)),
    )
    return {
        "by_status": batches_by_status(),
        "pending_per_model": requests_pending_per_model(),
        "engine_shares": engine_shares(),
        "throughput": output_throughput(),
        "oldest_waiting": oldest_waiting_batch(),
        "workers_alive": counts["alive"],
        "workers_lost": counts["lost"],
    }


def file_uses(file_ids: list[str], *, needed_only: bool) -> Iterator[FileUse]:
    """The batches that use these files (as input, output or error file), newest first: registered with
    files_api.usage. An unfinished batch needs its input file."""
    ids = set(file_ids)
    if needed_only:
        rows = Batch.objects.filter(input_file_id__in=ids, status__in=Batch.ACTIVE_STATUSES).values_list(
            "id", "status", "input_file_id", "output_file_id", "error_file_id"
        )
    else:
        rows = (
            Batch.objects.filter(Q(input_file_id__in=ids) | Q(output_file_id__in=ids) | Q(error_file_id__in=ids))
            .order_by("-created_at")
            .values_list("id", "status", "input_file_id", "output_file_id", "error_file_id")[:SHOWN]
        )
    for batch_id, status, *files in rows:
        for role, file_id in zip(("input", "output", "errors"), files, strict=True):
            needed = role == "input" and status in Batch.ACTIVE_STATUSES
            if file_id in ids and (needed or not needed_only):
                yield FileUse(
                    file_id=file_id,
                    kind="batch",
                    object_id=batch_id,
                    status=status,
                    role=role,
                    admin_url_name="admin:batches_api_batch_change",
                    blocks_deletion=needed,
                )


@dataclass
class ProjectUsage:
    """What a project has in flight and stores, against its limits (None: no limit)."""

    batches_in_flight: int
    batches_in_flight_limit: int | None
    stored_bytes: int
    stored_bytes_limit: int | None
    enqueued_tokens: dict[str, tuple[int, int | None]]  # model -> (its in-flight batches' tokens, the limit)


def project_usage(project: Project) -> ProjectUsage:
    """A project's usage of its limits: for the console and `manage.py project list`."""
    in_flight = Batch.objects.filter(project=project, status__in=Batch.IN_FLIGHT_STATUSES).order_by()
    tokens = dict(
        in_flight.exclude(model=None).values_list("model").annotate(tokens=Sum("enqueued_tokens")).order_by("model")
    )
    models = sorted({*tokens, *project.model_limits.values_list("model", flat=True)})
    return ProjectUsage(
        batches_in_flight=in_flight.count(),
        batches_in_flight_limit=batches_in_flight_limit(project),
        stored_bytes=stored_bytes(project.pk),
        stored_bytes_limit=stored_bytes_limit(project),
        enqueued_tokens={model: (tokens.get(model) or 0, enqueued_tokens_limit(project.pk, model)) for model in models},
    )


# ------------------------------------------------------------------------------------------------ live results
RESULTS_CHUNK = 500  # lines read from the database at once while a page is sent


@dataclass(frozen=True)
class ResultsPage:
    """A page of a batch's result lines in completion order: those numbered after `after`, up to `last`."""

    batch_id: str
    status: str  # the batch's status before the lines were read: once final, no line comes after `last`
    after: int
    last: int  # the cursor of the next page (`after` when the page is empty)
    has_more: bool  # more lines were there already past `last`
    head: tuple[tuple[int, str], ...] = ()  # the page's first lines, read with it: (number, line)

    def lines(self) -> Iterator[bytes]:
        """The page's lines, each exactly as the output or error file holds it, streamed a chunk at a time."""
        if self.head:
            yield b"".join(result_file_line(line) for _, line in self.head)
        start = self.head[-1][0] if self.head else self.after
        while start < self.last:
            rows = list(
                _lines_after(self.batch_id, start)
                .filter(result_seq__lte=self.last)
                .values_list("result_seq", "result_line")[:RESULTS_CHUNK]
            )
            if not rows:
                return
            yield b"".join(result_file_line(line) for _, line in rows)
            start = rows[-1][0]


def _lines_after(batch_id: str, after: int):
    return BatchRequest.objects.filter(batch_id=batch_id, result_seq__gt=after).order_by("result_seq")


def results_page(*, batch: Batch, after: int, limit: int) -> ResultsPage:
    """The next `limit` result lines of the batch (its row as just read) after cursor `after`. Lines are numbered
    in commit order (see services._number_lines) and never change once written, so a page read later holds the
    same lines, and the next page starts exactly where this one ends."""
    if after > batch.last_result_seq:
        raise InvalidRequest(
            f"Invalid 'after': {after} is past the last result line of batch '{batch.id}' ({batch.last_result_seq}). "
            "Pass the x-next-cursor header of a page of this batch, or leave 'after' out to start from its first line.",
            param="after",
        )
    # A client following a batch asks for the few lines that ended since its last page: one query reads them.
    first = min(limit, RESULTS_CHUNK)
    rows = list(_lines_after(batch.id, after).values_list("result_seq", "result_line")[: first + 1])
    head, beyond = rows[:first], len(rows) > first
    if beyond and limit > first:  # a page of many chunks: where it ends, from the numbers; lines read as it is sent
        numbers = list(_lines_after(batch.id, after).values_list("result_seq", flat=True)[: limit + 1])
        last, has_more = numbers[:limit][-1], len(numbers) > limit
    else:
        last, has_more = (head[-1][0] if head else after), beyond
    return ResultsPage(
        batch_id=batch.id, status=batch.status, after=after, last=last, has_more=has_more, head=tuple(head)
    )


# ------------------------------------------------------------------------------------------------ transitions
def batches_with_last_transition(batch_ids: list[str]) -> list[tuple[Batch, int]]:
    """The batches, each with the id of its latest BatchTransition (0: none yet), read in the same statement as
    the row, so that the two agree."""
    latest = BatchTransition.objects.filter(batch=OuterRef("pk")).order_by("-id").values("id")[:1]
    batches = Batch.objects.filter(pk__in=batch_ids).annotate(last_transition=Coalesce(Subquery(latest), 0))
    return [(batch, batch.last_transition) for batch in batches]


def transitions_between(bounds: dict[str, tuple[int, int]]) -> list[BatchTransition]:
    """The transitions of each batch whose id is in (after, up_to], given as {batch_id: (after, up_to)}, each
    batch's oldest first. Ids of one batch follow the order in which its transitions committed (each one
    updates the batch's row first), so none is skipped."""
    if not bounds:
        return []
    wanted = Q()
    for batch_id, (after, up_to) in bounds.items():
        wanted |= Q(batch_id=batch_id, id__gt=after, id__lte=up_to)
    return list(BatchTransition.objects.filter(wanted).order_by("batch_id", "id"))
