"""Sharing the engines between projects, at claim time (batches_api.scheduling): the share-out on its own, then
requests_claim against the real PostgreSQL with batches of a model no running worker serves (the suite's
workers never touch them)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from batches_api.scheduling import Candidate, share_out
from tests.conftest import start_worker, wait_for, wait_for_status
from tests.helpers import make_batch, request_line, upload_batch_file

MODEL = "share-test"  # served by nobody: only these tests claim its requests


# ------------------------------------------------------------------------------------------------ share-out
def group(*projects: tuple[int, int, int]) -> list[Candidate]:
    """(project, weight, batches) -> the candidates of one class, oldest first."""
    return [
        Candidate(f"b{project}-{i}", project, weight, "normal") for project, weight, n in projects for i in range(n)
    ]


def per_project(allotments) -> Counter:
    totals: Counter = Counter()
    for allotment in allotments:
        totals[allotment.unit[0]] += allotment.take
    return totals


def test_a_project_alone_gets_every_slot_shared_among_its_batches():
    allotments = share_out(group((1, 1, 3)), {}, 10)
    assert [a.take for a in allotments] == [4, 3, 3]  # the oldest batch gets the rest


def test_weights_share_free_slots_in_proportion():
    assert per_project(share_out(group((1, 1, 2), (2, 3, 1)), {}, 40)) == {1: 10, 2: 30}


def test_a_project_below_its_share_gets_the_slots_that_free_up():
    """A holds 246 of the 256 slots; B arrives: the 10 that free up all go to B."""
    running = {(1, "normal"): 246}
    allotments = share_out(group((1, 1, 20), (2, 1, 1)), running, 10)
    assert per_project(allotments) == {2: 10}
    assert allotments[0].engine_priority == 1078  # normal (1000) + 10 of its 128 slots once these are taken


def test_a_newcomer_ranks_ahead_of_a_project_that_filled_the_engine_alone():
    """In an engine that schedules by priority, B's first requests go ahead of A's, still waiting in the engine
    since A filled every slot alone; they must not tie and wait behind them."""
    a_first = share_out(group((1, 1, 6)), {}, 256)
    b_first = share_out(group((1, 1, 6), (2, 1, 1)), {(1, "normal"): 256}, 10)
    assert per_project(b_first) == {2: 10}
    assert max(a.engine_priority for a in b_first) < min(a.engine_priority for a in a_first)


@given(
    weights=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    running=st.lists(st.integers(0, 300), min_size=6, max_size=6),
    slots=st.integers(1, 500),
)
def test_every_slot_is_given_and_none_twice(weights, running, slots):
    candidates = group(*[(p, w, 1 + p % 3) for p, w in enumerate(weights)])
    allotments = share_out(candidates, {(p, "normal"): running[p] for p in range(len(weights))}, slots)
    assert sum(a.take for a in allotments) == slots
    assert all(a.take > 0 for a in allotments)
    assert len({a.batch_id for a in allotments}) == len(allotments)


# ------------------------------------------------------------------------------------------------ claiming
@pytest.fixture
def projects(db_access):
    from batchserver.models import Project

    tag = uuid.uuid4().hex[:6]
    return [Project.objects.create(name=f"share-{tag}-{name}") for name in ("a", "b")]


@pytest.fixture
def worker(db_access):
    from batches_api.models import Worker

    worker = Worker.objects.create(name=f"share-{uuid.uuid4().hex[:6]}", hostname="here", pid=1)
    yield worker
    from batches_api.models import Batch

    Batch.objects.filter(model=MODEL).update(status="cancelled")  # out of every later test's way


def batches(project, n: int, requests: int, *, minutes_ago: float = 10, **fields):
    now = timezone.now()
    return [
        make_batch(
            project,
            model=MODEL,
            total=requests,
            with_requests=True,
            created_at=now - timedelta(minutes=minutes_ago, seconds=-i),
            **fields,
        )
        for i in range(n)
    ]


def claimed_per_project(claimed) -> Counter:
    from batches_api.models import Batch

    owner = dict(Batch.objects.filter(pk__in={c.batch_id for c in claimed}).values_list("id", "project__name"))
    return Counter(owner[c.batch_id][-1] for c in claimed)


def test_a_small_batch_of_another_project_is_fed_before_a_big_backlog(projects, worker):
    from batches_api.services import requests_claim

    a, b = projects
    batches(a, 20, 30, minutes_ago=20)
    assert len(requests_claim(worker_id=worker.pk, model=MODEL, limit=100)) == 100  # A fills the engine
    batches(b, 1, 20, minutes_ago=1)  # B comes last, behind 500 of A's requests
    assert claimed_per_project(requests_claim(worker_id=worker.pk, model=MODEL, limit=10)) == {"b": 10}


def test_weights_decide_the_shares_and_idle_capacity_is_never_held_back(projects, worker):
    from batches_api.services import requests_claim

    a, b = projects
    b.weight = 3
    b.save(update_fields=["weight"])
    batches(a, 2, 50)
    batches(b, 2, 50)
    assert claimed_per_project(requests_claim(worker_id=worker.pk, model=MODEL, limit=40)) == {"a": 10, "b": 30}
    # B has 70 left, A 90: 200 slots take everything, B's shortfall going to A in a further pass.
    assert claimed_per_project(requests_claim(worker_id=worker.pk, model=MODEL, limit=200)) == {"a": 90, "b": 70}


def test_high_goes_first_and_low_only_takes_what_nobody_else_wants(projects, worker):
    from batches_api.services import requests_claim

    a, b = projects
    batches(a, 10, 20, minutes_ago=30)
    low = batches(b, 1, 20, minutes_ago=30, priority="low", in_progress_at=timezone.now())
    high = batches(b, 1, 20, minutes_ago=1, priority="high")
    claimed = requests_claim(worker_id=worker.pk, model=MODEL, limit=30)
    by_batch = Counter(c.batch_id for c in claimed)
    assert by_batch[high[0].id] == 20 and by_batch[low[0].id] == 0  # high first, the normal ones get the rest
    assert all(c.engine_priority < 1000 for c in claimed if c.batch_id == high[0].id)
    assert all(c.engine_priority >= 1000 for c in claimed if c.batch_id != high[0].id)
    claimed = requests_claim(worker_id=worker.pk, model=MODEL, limit=300)
    by_batch = Counter(c.batch_id for c in claimed)
    assert by_batch[low[0].id] == 20 and sum(by_batch.values()) == 190 + 20  # nobody else wants the rest


def test_a_low_batch_that_waited_past_aging_shares_as_normal(projects, worker, settings):
    from batches_api.services import requests_claim

    a, b = projects
    batches(a, 4, 50, minutes_ago=30)
    waited = settings.BATCHSERVER_PRIORITY_AGING_SECONDS + 5
    low = batches(b, 1, 50, minutes_ago=30, priority="low", in_progress_at=timezone.now() - timedelta(seconds=waited))
    claimed = requests_claim(worker_id=worker.pk, model=MODEL, limit=40)
    assert Counter(c.batch_id for c in claimed)[low[0].id] == 20  # half: B's share, like any normal project's


def test_a_batch_may_choose_its_priority_only_when_its_project_allows(projects):
    from batches_api.services import batch_priority
    from batchserver.errors import InvalidRequest

    a, _ = projects
    a.priority = "low"
    assert batch_priority(a, {"priority": "high"}) == "low"  # not allowed: the project's
    a.batch_priority_allowed = True
    assert batch_priority(a, {"priority": "high"}) == "high"
    assert batch_priority(a, {"note": "x"}) == "low"
    with pytest.raises(InvalidRequest, match="use one of high, normal, low"):
        batch_priority(a, {"priority": "urgent"})


# ------------------------------------------------------------------------------------------------ with workers
FAIR = "fake-fair"  # served only by the workers of these tests
SECONDS_PER_REQUEST = 0.5  # 250 tokens at 2 ms: every request takes the same time


def fair_lines(tag: str, n: int) -> list[dict]:
    return [
        request_line(
            f"{tag}-{i}",
            body={"model": FAIR, "max_tokens": 250, "messages": [{"role": "user", "content": f"{tag} {i}"}]},
        )
        for i in range(n)
    ]


def submit(client, lines):
    file = upload_batch_file(client, lines)
    return client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")


@pytest.fixture
def weights(db_access):
    """Set the test projects' weights; back to 1 afterwards."""
    from batchserver.models import Project

    def set_weights(**by_name):
        for name, weight in by_name.items():
            Project.objects.filter(name=name).update(weight=weight)

    yield set_weights
    Project.objects.filter(name__in=["alice", "bob"]).update(weight=1)


def cancel_all(client, batches):
    for batch in batches:
        if client.batches.retrieve(batch.id).status in ("validating", "in_progress"):
            client.batches.cancel(batch.id)
    for batch in batches:
        wait_for_status(client, batch.id, {"cancelled", "completed"}, timeout=60)


def test_a_small_batch_behind_another_projects_backlog_runs_at_once(client, other_client, stack_env, db_access):
    """Project A queues 20 batches of 200 requests, then project B one of 20: B's first result arrives within 2 s
    of its in_progress, and B completes while most of A's work still waits."""
    from batches_api.models import Batch, BatchRequest

    worker = start_worker(stack_env, "fair-one", [FAIR], {"BATCHSERVER_WORKER_MAX_INFLIGHT": "32"})
    backlog = []
    try:
        backlog = [submit(client, fair_lines(f"a{i}", 200)) for i in range(20)]
        wait_for(
            lambda: BatchRequest.objects.filter(batch_id__in=[b.id for b in backlog], status="responded").count() > 50,
            90,
            message="project A's backlog to be running",
        )
        small = wait_for_status(other_client, submit(other_client, fair_lines("b", 20)).id, {"completed"}, 60)
        started = Batch.objects.get(pk=small.id).in_progress_at
        first = BatchRequest.objects.filter(batch_id=small.id).order_by("finished_at").first().finished_at
        waiting = BatchRequest.objects.filter(batch_id__in=[b.id for b in backlog], status="pending").count()
    finally:
        cancel_all(client, backlog)
        worker.stop()
    assert small.request_counts.completed == 20
    print(f"B's first result {(first - started).total_seconds():.2f} s after its in_progress")
    assert (first - started).total_seconds() <= 2.0
    assert waiting > 2000  # A's backlog (4,000 requests) is mostly still waiting


@pytest.mark.parametrize("workers", [1, 2])
def test_busy_projects_share_the_engines_by_weight(
    client, other_client, server, stack_env, db_access, weights, workers
):
    """Both projects busy, weights 1:3: over a window of several seconds the completed requests split 25/75
    (within 10%), with one worker or with two."""
    from batches_api.models import BatchRequest

    weights(alice=1, bob=3)
    inflight = str(32 // workers)
    procs = [
        start_worker(stack_env, f"fair-{workers}-{n}", [FAIR], {"BATCHSERVER_WORKER_MAX_INFLIGHT": inflight})
        for n in range(workers)
    ]
    a_batches, b_batches = [], []
    try:
        a_batches = [submit(client, fair_lines(f"wa{i}", 400)) for i in range(2)]
        b_batches = [submit(other_client, fair_lines(f"wb{i}", 600)) for i in range(2)]  # B runs 3x as fast
        ids = {batch.id: "a" for batch in a_batches} | {batch.id: "b" for batch in b_batches}

        def done_since(since):
            rows = BatchRequest.objects.filter(batch_id__in=ids, status="responded", finished_at__gte=since)
            return Counter(ids[batch_id] for batch_id in rows.values_list("batch_id", flat=True))

        start = timezone.now()
        wait_for(lambda: len(done_since(start)) == 2, 90, message="both projects to have results")
        window_start = timezone.now() + timedelta(seconds=3)  # past the start, when the shares have settled
        scrapes = []  # /metrics through the window: a gauge read once may catch a worker between two claims

        def window_over() -> bool:
            if timezone.now() >= window_start:
                text = httpx.get(f"{server}/metrics").text
                scrapes.append({f.name: f.samples for f in text_string_to_metric_families(text)})
            return timezone.now() > window_start + timedelta(seconds=12)

        wait_for(window_over, 30, interval=1)
        shares = done_since(window_start)
    finally:
        cancel_all(client, a_batches)
        cancel_all(other_client, b_batches)
        for proc in procs:
            proc.stop()
    total = shares["a"] + shares["b"]
    print(f"{workers} worker(s): {total} requests in the window, B's share {shares['b'] / total:.3f}")
    assert total > 100
    assert 0.75 * 0.9 <= shares["b"] / total <= 0.75 * 1.1

    def figure(name: str, project: str, scraped=scrapes) -> float:
        """The gauge summed over the window's scrapes."""
        return sum(
            sample.value
            for metrics in scraped
            for sample in metrics[name]
            if sample.labels == {"model": FAIR, "project": project}
        )

    last = scrapes[-1:]
    assert figure("batchserver_project_weight", "bob", last) == 3
    assert figure("batchserver_project_weight", "alice", last) == 1
    assert figure("batchserver_project_running_requests", "bob") > figure(
        "batchserver_project_running_requests", "alice"
    )
    assert figure("batchserver_project_waiting_requests", "alice") > 0
    assert figure("batchserver_project_share", "bob") > figure("batchserver_project_share", "alice")


def test_high_starts_within_a_claim_interval_and_low_finishes_under_aging(client, stack_env, db_access):
    """Behind 10 normal batches: a high batch starts at the next claim; a low one, aged into normal after 3 s,
    finishes while the normal ones still have work waiting."""
    from batches_api.models import Batch, BatchRequest
    from batchserver.models import Project
    from inference.worker import BUSY_CLAIM_SECONDS

    Project.objects.filter(name="alice").update(batch_priority_allowed=True)
    env = {"BATCHSERVER_WORKER_MAX_INFLIGHT": "32", "BATCHSERVER_PRIORITY_AGING_SECONDS": "3"}
    worker = start_worker(stack_env, "priorities", [FAIR], env)
    normal = []
    try:
        normal = [submit(client, fair_lines(f"n{i}", 60)) for i in range(10)]
        low = client.batches.create(
            input_file_id=upload_batch_file(client, fair_lines("low", 10)).id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"priority": "low"},
        )
        wait_for(
            lambda: BatchRequest.objects.filter(batch_id__in=[b.id for b in normal], status="responded").exists(),
            60,
            message="the normal batches to run",
        )
        high = client.batches.create(
            input_file_id=upload_batch_file(client, fair_lines("high", 10)).id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"priority": "high"},
        )
        wait_for_status(client, high.id, {"completed"}, 60)
        wait_for_status(client, low.id, {"completed"}, 60)
        normal_waiting = BatchRequest.objects.filter(batch_id__in=[b.id for b in normal], status="pending").count()
        high_row = Batch.objects.get(pk=high.id)
        first_claim = BatchRequest.objects.filter(batch_id=high.id).order_by("claimed_at").first().claimed_at
    finally:
        cancel_all(client, normal)
        worker.stop()
        Project.objects.filter(name="alice").update(batch_priority_allowed=False)
    assert high_row.priority == "high" and Batch.objects.get(pk=low.id).priority == "low"
    waited = (first_claim - high_row.in_progress_at).total_seconds()
    print(f"the high batch's first request claimed {waited:.2f} s after its in_progress")
    assert waited <= BUSY_CLAIM_SECONDS + 0.5  # one claim interval, and the slack of a busy machine
    assert normal_waiting > 0  # the low batch finished before the normal backlog, thanks to aging
