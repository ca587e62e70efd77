"""Sharing the engines between projects: from which batches a worker claims, and how many requests from each.

Decided from the database at claim time, so that it holds across every worker of a model:

- Priority first. The requests of `high` batches are claimed first, then `normal`, then `low`: a lower class gets
  only the slots the classes above it leave. A `low` batch in progress for longer than
  BATCHSERVER_PRIORITY_AGING_SECONDS counts as `normal`, so that it never starves for longer.
- Within a class, fair share by project weight. Each project with waiting work is entitled to the engine slots of
  the model (those in flight on every worker, plus those being filled) in proportion to its weight; the slots being
  filled go to the projects below their entitlement, in proportion to how far below they are. A project alone
  gets everything: nothing is held back for projects without work.
- Within a project, its batches share its slots equally, the oldest first.

A project's unit of sharing is (project, priority class): a project whose batches set their own priority has one
unit per class.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from batches_api.models import BatchRequest
from batchserver.models import Priority

RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
BATCHES_PER_PROJECT = 32  # a project's oldest batches with work share each claim; the newer ones wait their turn
MAX_CANDIDATES = 2000


@dataclass(frozen=True)
class Candidate:
    """A batch with requests to claim."""

    batch_id: str
    project_id: int
    weight: int
    priority: str  # its class now, after aging

    @property
    def unit(self) -> tuple[int, str]:
        return (self.project_id, self.priority)


@dataclass(frozen=True)
class Allotment:
    batch_id: str
    unit: tuple[int, str]
    take: int
    # vLLM's per-request priority (lower runs earlier) for the engines that schedule by priority: the class, then
    # how much of its entitlement the project already has, so a project far below its share jumps the queue.
    engine_priority: int


def effective_priority(priority: str, in_progress_at: datetime | None, now: datetime) -> str:
    aging = timedelta(seconds=settings.BATCHSERVER_PRIORITY_AGING_SECONDS)
    if priority == Priority.LOW and in_progress_at is not None and in_progress_at <= now - aging:
        return Priority.NORMAL
    return priority


def candidates(runnable, claimable: Q) -> list[Candidate]:
    """The runnable batches (a queryset, oldest first) that have claimable requests."""
    now = timezone.now()
    rows = (
        runnable.filter(Exists(BatchRequest.objects.filter(claimable, batch=OuterRef("pk"))))
        .values_list("id", "project_id", "project__weight", "priority", "in_progress_at")
        .order_by("created_at")[:MAX_CANDIDATES]
    )
    return [
        Candidate(batch_id, project_id, max(1, weight), effective_priority(priority, started, now))
        for batch_id, project_id, weight, priority, started in rows
    ]


def running_slots(runnable) -> dict[tuple[int, str], int]:
    """Requests in flight per unit, on every worker, in the runnable batches (a queryset) of one model."""
    now = timezone.now()
    rows = (
        BatchRequest.objects.filter(batch__in=runnable, status=BatchRequest.Status.RUNNING)
        .values_list("batch__project_id", "batch__priority", "batch__in_progress_at")
        .annotate(n=Count("id"))
        .order_by()
    )
    running: dict[tuple[int, str], int] = {}
    for project_id, priority, started, n in rows:
        unit = (project_id, effective_priority(priority, started, now))
        running[unit] = running.get(unit, 0) + n
    return running


def by_class(batches: Iterable[Candidate]) -> list[list[Candidate]]:
    """The candidates grouped by priority class, highest first (oldest first within each)."""
    groups: dict[str, list[Candidate]] = {}
    for candidate in batches:
        groups.setdefault(candidate.priority, []).append(candidate)
    return [groups[p] for p in sorted(groups, key=lambda p: RANK[Priority(p)])]


def share_out(group: list[Candidate], running: dict[tuple[int, str], int], slots: int) -> list[Allotment]:
    """Share `slots` among the batches of one priority class (oldest first): among projects by how far each is
    below its weighted entitlement to the class's slots (those in flight plus these), then equally among a
    project's batches."""
    if slots <= 0 or not group:
        return []
    units: dict[tuple[int, str], list[Candidate]] = {}
    for candidate in group:
        units.setdefault(candidate.unit, []).append(candidate)
    weights = {unit: batches[0].weight for unit, batches in units.items()}
    total = slots + sum(running.get(unit, 0) for unit in units)
    weight_sum = sum(weights.values())
    entitled = {unit: total * weights[unit] / weight_sum for unit in units}
    below = {unit: max(0.0, entitled[unit] - running.get(unit, 0)) for unit in units}
    per_unit = _largest_remainder(slots, below)
    rank = RANK[Priority(group[0].priority)]
    allotments = []
    for unit, batches in units.items():
        # Its share once these slots are taken: a project that fills the engine alone ranks behind a newcomer's
        # first requests, which would otherwise tie with them and wait behind them in the engine's queue.
        share = (running.get(unit, 0) + per_unit[unit]) / entitled[unit] if entitled[unit] else 1.0
        engine_priority = rank * 1000 + min(999, int(1000 * share))
        batches = batches[:BATCHES_PER_PROJECT]
        base, extra = divmod(per_unit[unit], len(batches))
        for i, candidate in enumerate(batches):
            take = base + (1 if i < extra else 0)
            if take:
                allotments.append(Allotment(candidate.batch_id, unit, take, engine_priority))
    return allotments


def _largest_remainder(slots: int, claims: dict[tuple[int, str], float]) -> dict[tuple[int, str], int]:
    """`slots` split in proportion to `claims` in whole numbers (the largest fractions get the rest)."""
    total = sum(claims.values())
    if total <= 0:  # nobody below its entitlement (cannot happen with slots > 0): share by weight order instead
        claims = dict.fromkeys(claims, 1.0)
        total = float(len(claims))
    exact = {unit: slots * value / total for unit, value in claims.items()}
    shares = {unit: int(value) for unit, value in exact.items()}
    rest = slots - sum(shares.values())
    for unit in sorted(exact, key=lambda u: exact[u] - shares[u], reverse=True)[:rest]:
        shares[unit] += 1
    return shares
