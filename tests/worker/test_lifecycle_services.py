"""The batch lifecycle's races, one by one, against the services on the real PostgreSQL: two validations at
once, a finalize that nobody asked for, a late result against "not run", a request that keeps killing its
worker, and a sweep with one batch that fails. Each would lose or stall work before the state machine moved
into batches_api.services; the end-to-end versions are in test_healing.py."""

from __future__ import annotations

import json
import logging
import signal
import uuid
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone

from tests.helpers import make_batch, request_json, write_file
from tests.stack import ROOT, pause


@pytest.fixture(autouse=True)
def quiet_stack():
    """The suite's task clusters and workers, paused (SIGSTOP) for the test, outside any transaction of theirs:
    each test here plays every part itself, and a real sweep or worker acting on its rows at the same moment
    would make it a different test."""
    family = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["cwd"] == str(ROOT) and ("manage.py runtasks" in cmdline or "manage.py runworker" in cmdline):
            try:
                family += [proc, *proc.children(recursive=True)]
            except psutil.Error:
                continue
    paused = pause(family)
    yield
    for member in paused:
        try:
            member.send_signal(signal.SIGCONT)
        except psutil.Error:
            pass


@pytest.fixture
def project(db_access):
    from batchserver.models import Project

    return Project.objects.create(name=f"lifecycle-{uuid.uuid4().hex[:8]}")


def validating_batch(project, lines: int = 3):
    from batches_api.models import Batch

    data = b"".join(json.dumps(request_json(f"v{i}")).encode() + b"\n" for i in range(lines))
    now = timezone.now()
    return Batch.objects.create(
        project=project,
        endpoint="/v1/chat/completions",
        input_file=write_file(project, data),
        expires_at=now + timedelta(hours=24),
    )


def dead_worker(**fields):
    from batches_api.models import Worker

    return Worker.objects.create(name="gone", hostname="nowhere", pid=1, stopped_at=timezone.now(), **fields)


def live_worker():
    from batches_api.models import Worker

    return Worker.objects.create(name="here", hostname="somewhere", pid=1)


def claimed(request) -> object:
    from batches_api.services import ClaimedRequest

    return ClaimedRequest(
        id=request.pk,
        batch_id=request.batch_id,
        custom_id=request.custom_id,
        offset=request.offset,
        length=request.length,
        attempts=request.attempts,
    )


# ------------------------------------------------------------------------------------------------ validation
def test_a_validation_delivered_while_another_runs_does_nothing(project):
    from batches_api import services
    from batches_api.models import Batch, BatchRequest

    batch = validating_batch(project)
    with services.batch_job(batch.id, [Batch.Status.VALIDATING]) as running:
        assert running is not None
        services.batch_validate(batch_id=batch.id)
        batch.refresh_from_db()
        assert batch.status == "validating" and batch.job_owner == running.owner
        assert BatchRequest.objects.filter(batch=batch).count() == 0
    assert Batch.objects.get(pk=batch.pk).job_owner is None  # released at the end


def test_a_lost_validation_cannot_touch_the_rows_of_the_one_that_took_over(project):
    from batches_api import services
    from batches_api.models import Batch, BatchRequest

    batch = validating_batch(project)
    # An attempt whose process hangs: it holds the claim, but its heartbeat stopped long ago.
    Batch.objects.filter(pk=batch.pk).update(
        job_owner="job_hung", job_heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    services.batch_validate(batch_id=batch.id)
    batch.refresh_from_db()
    assert batch.status == "in_progress" and batch.total_requests == 3
    # The hung attempt wakes up and goes on: every write it tries is refused, and the batch keeps its rows.
    hung = services.Job(batch_id=batch.id, owner="job_hung")
    with pytest.raises(services.JobLost):
        services._fail_validation(hung, [{"code": "invalid_json_line", "message": "x", "param": None, "line": 1}])
    batch.refresh_from_db()
    assert batch.status == "in_progress" and batch.errors is None
    assert BatchRequest.objects.filter(batch=batch).count() == 3


def test_the_sweep_retries_a_validation_whose_job_went_silent_and_fails_it_after_three(project):
    from batches_api import services
    from batches_api.models import Batch

    batch = validating_batch(project)
    long_ago = timezone.now() - timedelta(minutes=5)
    Batch.objects.filter(pk=batch.pk).update(
        job_owner="job_dead", job_heartbeat_at=long_ago, job_enqueued_at=long_ago, validation_attempts=1
    )
    assert services.sweep().validations >= 1
    batch.refresh_from_db()
    assert batch.job_enqueued_at > long_ago  # enqueued again (whoever runs it claims it once)
    # Enqueued a moment ago: not again, however often the sweep runs.
    enqueued = batch.job_enqueued_at
    services.sweep()
    assert Batch.objects.get(pk=batch.pk).job_enqueued_at == enqueued
    # Three attempts that died: the batch fails with a message saying where to look, instead of looping.
    Batch.objects.filter(pk=batch.pk).update(
        job_heartbeat_at=long_ago, job_enqueued_at=long_ago, validation_attempts=services.MAX_VALIDATION_ATTEMPTS
    )
    services.sweep()
    batch.refresh_from_db()
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors[0]["code"] == "validation_failed" and "task log" in batch.errors[0]["message"]


# ------------------------------------------------------------------------------------------------ finalizing
def test_a_finished_batch_nobody_asked_to_finalize_is_finalized_by_the_sweep(project):
    from batches_api import services

    # Its worker committed the last results and died before asking for finalizing.
    batch = make_batch(project, total=3, completed=3, with_requests=True)
    for request in batch.requests.all():
        request.result_line = json.dumps({"custom_id": request.custom_id})
        request.save()
    assert services.sweep().finalizations >= 1
    services.batch_finalize(batch_id=batch.id)  # what the enqueued task runs (if the cluster was not faster)
    batch.refresh_from_db()
    assert batch.status == "completed" and batch.output_file_id is not None and batch.error_file_id is None
    assert (batch.completed_requests, batch.failed_requests) == (3, 0)


def test_finalizing_writes_both_files_in_input_order_also_for_a_batch_read_a_chunk_at_a_time(project):
    """Responses go to the output file and requests that never ran to the error file, each in input order, from
    one pass over the batch's rows; past RESULTS_IN_ONE_QUERY requests that pass reads a chunk at a time."""
    from django.db.models import F, TextField, Value
    from django.db.models.functions import Concat, Mod

    from batches_api import services
    from batches_api.models import BatchRequest
    from files_api.models import File
    from files_api.services import file_open

    total = services.RESULTS_IN_ONE_QUERY + 501
    batch = make_batch(project, total=total, completed=total, with_requests=True)
    rows = BatchRequest.objects.filter(batch=batch)
    rows.annotate(every_fifth=Mod("line", 5)).filter(every_fifth=0).update(
        status="errored", status_code=None, error_code="batch_expired"
    )
    rows.update(result_line=Concat(Value('{"custom_id": "'), F("custom_id"), Value('"}'), output_field=TextField()))
    services.batch_finalize(batch_id=batch.id)
    batch.refresh_from_db()
    assert batch.status == "completed" and (batch.completed_requests, batch.failed_requests) == (total - 500, 500)

    def custom_ids(file_id: str) -> list[str]:
        with file_open(File.objects.get(pk=file_id)) as fh:
            return [json.loads(line)["custom_id"] for line in fh.read().splitlines()]

    assert custom_ids(batch.output_file_id) == [f"r{line - 1}" for line in range(1, total + 1) if line % 5]
    assert custom_ids(batch.error_file_id) == [f"r{line - 1}" for line in range(5, total + 1, 5)]


def test_a_finalize_that_died_half_way_is_retried_once_its_job_is_silent(project):
    from batches_api import services
    from batches_api.models import Batch

    batch = make_batch(
        project, status="finalizing", total=2, completed=2, with_requests=True, finalizing_at=timezone.now()
    )
    for request in batch.requests.all():
        request.result_line = json.dumps({"custom_id": request.custom_id})
        request.save()
    Batch.objects.filter(pk=batch.pk).update(
        job_owner="job_dead", job_heartbeat_at=timezone.now(), job_enqueued_at=timezone.now()
    )
    assert services.batch_finalize(batch_id=batch.id).status == "finalizing"  # its job still looks alive
    long_ago = timezone.now() - timedelta(minutes=5)
    Batch.objects.filter(pk=batch.pk).update(job_heartbeat_at=long_ago, job_enqueued_at=long_ago)
    assert services.sweep().finalizations >= 1
    assert services.batch_finalize(batch_id=batch.id).status == "completed"


# ------------------------------------------------------------------------------------------------ not run
def test_not_run_never_overwrites_a_result_that_a_late_worker_committed_first(project):
    from batches_api import services
    from batches_api.models import BatchRequest

    worker = live_worker()
    batch = make_batch(project, status="cancelling", total=2, with_requests=True, cancelling_at=timezone.now())
    first, second = batch.requests.order_by("line")
    BatchRequest.objects.filter(pk__in=[first.pk, second.pk]).update(status="running", worker=worker, attempts=1)
    first.refresh_from_db()
    written = services.requests_record(
        worker_id=worker.pk,
        outcomes=[services.Outcome(request=claimed(first), status_code=200, body={"ok": True}, output_tokens=5)],
    )
    assert written == {first.pk}
    worker.stopped_at = timezone.now()
    worker.save()
    assert services.requests_not_run(batch_id=batch.id, not_run=services.CANCELLED) == 1  # only the other one
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.status_code) == ("responded", 200)
    assert (second.status, second.error_code) == ("errored", "batch_cancelled")


def test_a_result_that_comes_after_not_run_is_dropped(project):
    from batches_api import services
    from batches_api.models import BatchRequest

    worker = live_worker()
    batch = make_batch(project, status="cancelling", total=1, with_requests=True, cancelling_at=timezone.now())
    request = batch.requests.get()
    BatchRequest.objects.filter(pk=request.pk).update(status="running", worker=worker, attempts=1)
    request.refresh_from_db()
    worker.last_heartbeat_at = timezone.now() - timedelta(minutes=5)  # looks dead to everyone else
    worker.save()
    assert services.requests_not_run(batch_id=batch.id, not_run=services.CANCELLED) == 1
    late = services.requests_record(
        worker_id=worker.pk, outcomes=[services.Outcome(request=claimed(request), status_code=200, body={"ok": True})]
    )
    assert late == set()
    request.refresh_from_db()
    assert (request.status, request.error_code) == ("errored", "batch_cancelled")
    batch.refresh_from_db()
    assert batch.completed_requests == 0 and batch.failed_requests == 1


# ------------------------------------------------------------------------------------------------ numbering
def test_result_lines_are_numbered_in_commit_order_so_a_reader_never_skips_one(project):
    """Two writers record lines of one batch at once, the first one slow to commit. The second numbers its lines
    only once the first has committed, so no reader that follows the numbers (GET /v1/batches/{id}/results) can
    see the second's lines and then miss the first's."""
    import threading
    import time

    from django.db import connection, transaction

    from batches_api import selectors, services
    from batches_api.models import Batch, BatchRequest

    worker = live_worker()
    batch = make_batch(project, total=4, with_requests=True)
    BatchRequest.objects.filter(batch=batch).update(status="running", worker=worker, attempts=1)
    rows = list(batch.requests.order_by("line"))
    first_recorded, first_may_commit = threading.Event(), threading.Event()
    commits: list[str] = []

    def record(requests) -> None:
        services.requests_record(
            worker_id=worker.pk,
            outcomes=[services.Outcome(request=claimed(r), status_code=200, body={"ok": r.line}) for r in requests],
        )

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                record(rows[:2])
                first_recorded.set()
                first_may_commit.wait(10)
                commits.append("first")
        finally:
            connection.close()

    def fast_writer() -> None:
        try:
            first_recorded.wait(10)
            record(rows[2:])
            commits.append("second")
        finally:
            connection.close()

    writers = [threading.Thread(target=slow_writer), threading.Thread(target=fast_writer)]
    for writer in writers:
        writer.start()
    first_recorded.wait(10)
    time.sleep(1)
    assert commits == []  # the second waits for the first, rather than committing higher numbers before it
    assert selectors.results_page(batch=Batch.objects.get(pk=batch.pk), after=0, limit=10).last == 0
    first_may_commit.set()
    for writer in writers:
        writer.join(10)
    assert commits == ["first", "second"]
    numbers = dict(BatchRequest.objects.filter(batch=batch).values_list("line", "result_seq"))
    assert sorted(numbers[line] for line in (1, 2)) == [1, 2] and sorted(numbers[line] for line in (3, 4)) == [3, 4]
    assert Batch.objects.get(pk=batch.pk).last_result_seq == 4
    page = selectors.results_page(batch=Batch.objects.get(pk=batch.pk), after=2, limit=10)
    assert (page.last, page.has_more) == (4, False) and len(b"".join(page.lines()).splitlines()) == 2


def test_result_pages_of_any_size_hold_each_line_once_in_order(project, monkeypatch):
    """Pages of one chunk (read in the page's own query), of exactly a chunk and of many chunks (streamed as they are
    sent) follow each other with no gap and no repeat."""
    from batches_api import selectors, services
    from batches_api.models import Batch, BatchRequest

    monkeypatch.setattr(selectors, "RESULTS_CHUNK", 4)
    worker = live_worker()
    batch = make_batch(project, total=23, with_requests=True)
    BatchRequest.objects.filter(batch=batch).update(status="running", worker=worker, attempts=1)
    requests = list(batch.requests.order_by("line"))
    services.requests_record(
        worker_id=worker.pk,
        outcomes=[services.Outcome(request=claimed(r), status_code=200, body={"line": r.line}) for r in requests],
    )
    got, cursor = [], 0
    for limit, has_more in [(3, True), (4, True), (5, True), (9, True), (100, False), (5, False)]:
        page = selectors.results_page(batch=Batch.objects.get(pk=batch.pk), after=cursor, limit=limit)
        lines = b"".join(page.lines()).splitlines()
        assert len(lines) == min(limit, 23 - cursor) and page.has_more == has_more
        got += [json.loads(line)["response"]["body"]["line"] for line in lines]
        cursor = page.last
    assert got == [r.line for r in requests] and cursor == 23


# ------------------------------------------------------------------------------------------------ poison
def test_requests_that_were_in_flight_when_engines_died_are_quarantined_then_ended(project):
    from batches_api import services
    from batches_api.models import BatchRequest

    gone = dead_worker()
    model = f"only-{project.name}"  # claims take requests of this batch only
    batch = make_batch(project, total=20, with_requests=True, model=model)
    rows = list(batch.requests.order_by("line"))
    # Two engine deaths with these 17 in flight: they are suspects now.
    BatchRequest.objects.filter(pk__in=[r.pk for r in rows[3:]]).update(
        status="running", worker=gone, attempts=services.SUSPECT_AFTER
    )
    worker = live_worker()
    normal = services.requests_claim(worker_id=worker.pk, model=model, limit=100)
    assert {r.id for r in normal} == {r.pk for r in rows[:3]}  # a normal claim never takes a suspect
    level = services.quarantine_level(model)
    assert level == services.SUSPECT_AFTER
    group = services.requests_claim(
        worker_id=worker.pk, model=model, limit=services.QUARANTINE_GROUPS[level], tries=level
    )
    assert len(group) == services.QUARANTINE_GROUPS[level] < 17
    # The group's engine dies too: one more level down, they run alone.
    worker.stopped_at = timezone.now()
    worker.save()
    assert services.quarantine_level(model) == services.SUSPECT_AFTER + 1
    poison = BatchRequest.objects.get(pk=group[0].id)
    alone_worker = live_worker()
    alone = services.requests_claim(worker_id=alone_worker.pk, model=model, limit=1, tries=poison.attempts)
    assert len(alone) == 1 and alone[0].attempts == services.MAX_ATTEMPTS
    # The engine dies with it running alone: it gets an error line, and the batch moves on.
    alone_worker.stopped_at = timezone.now()
    alone_worker.save()
    assert services.requests_end_poisoned() >= 1
    ended = BatchRequest.objects.get(pk=alone[0].id)
    assert (ended.status, ended.error_code) == ("errored", "server_error")
    assert f"died {services.MAX_ATTEMPTS} times" in json.loads(ended.result_line)["error"]["message"]
    assert BatchRequest.objects.filter(batch=batch, status="errored").count() == 1  # nobody else


def test_a_claim_takes_what_gone_workers_held_first_then_pending_lines_in_order(project):
    from batches_api import services
    from batches_api.models import BatchRequest, Worker

    model = f"only-{project.name}"
    batch = make_batch(project, total=8, with_requests=True, model=model)
    rows = list(batch.requests.order_by("line"))
    stopped, busy = dead_worker(), live_worker()
    silent = live_worker()
    Worker.objects.filter(pk=silent.pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    held = {5: stopped, 6: busy, 7: silent}
    for line, holder in held.items():
        BatchRequest.objects.filter(pk=rows[line - 1].pk).update(status="running", worker=holder, attempts=1)
    BatchRequest.objects.filter(pk=rows[7].pk).update(status="running", worker=None, attempts=1)  # its worker deleted

    worker = live_worker()
    first = services.requests_claim(worker_id=worker.pk, model=model, limit=4)
    assert [r.custom_id for r in first] == ["r4", "r6", "r7", "r0"]  # lines 5, 7, 8 orphaned, then line 1
    assert [r.attempts for r in first] == [2, 2, 2, 1]
    rest = services.requests_claim(worker_id=worker.pk, model=model, limit=10)
    assert [r.custom_id for r in rest] == ["r1", "r2", "r3"]  # line 6 stays with its live worker
    assert BatchRequest.objects.get(pk=rows[5].pk).worker_id == busy.pk
    assert services.requests_claim(worker_id=worker.pk, model=model, limit=10) == []


def test_a_clean_give_back_does_not_count_as_a_try(project):
    from batches_api import services
    from batches_api.models import BatchRequest

    worker = live_worker()
    model = f"only-{project.name}"
    batch = make_batch(project, total=2, with_requests=True, model=model)
    claimed_now = services.requests_claim(worker_id=worker.pk, model=model, limit=2)
    assert [r.attempts for r in claimed_now] == [1, 1]
    services.requests_release(worker_id=worker.pk, request_ids=[claimed_now[0].id])
    services.requests_release(worker_id=worker.pk, request_ids=[claimed_now[1].id], failed=True)
    assert dict(BatchRequest.objects.filter(batch=batch).values_list("line", "attempts")) == {1: 0, 2: 1}
    assert set(BatchRequest.objects.filter(batch=batch).values_list("status", flat=True)) == {"pending"}


# ------------------------------------------------------------------------------------------------ sweep
def test_one_failing_batch_does_not_stall_the_sweep(project, monkeypatch, caplog):
    from batches_api import services
    from batches_api.models import Batch

    broken, fine = validating_batch(project), validating_batch(project)
    long_ago = timezone.now() - timedelta(minutes=5)
    Batch.objects.filter(pk__in=[broken.pk, fine.pk]).update(job_enqueued_at=long_ago)
    enqueued = []

    def enqueue(func, *args):
        if broken.id in args:
            raise RuntimeError("the queue refused this one")
        enqueued.append(args)

    monkeypatch.setattr(services, "enqueue", enqueue)
    with caplog.at_level(logging.ERROR, logger="batches_api.services"):
        report = services.sweep()
    assert (fine.id,) in enqueued
    assert report.errors >= 1
    assert any(broken.id in record.getMessage() and record.exc_info for record in caplog.records)


def test_a_batch_locked_by_a_stalled_transaction_is_left_for_the_next_sweep(project, monkeypatch, caplog):
    """A process stalled in the middle of a transaction holds its batch's row; the task cluster's sweeps skip
    that batch after a bounded wait and heal the others, rather than wait with it."""
    import threading

    from django.db import connection, transaction

    from batches_api import services
    from batches_api.models import Batch
    from batchserver import sweeps

    stuck, fine = (
        make_batch(project, status="cancelling", total=1, with_requests=True, cancelling_at=timezone.now())
        for _ in range(2)
    )
    enqueued = []
    monkeypatch.setattr(services, "enqueue", lambda func, *args: enqueued.append(args))
    monkeypatch.setattr(sweeps, "LOCK_WAIT_SECONDS", 0.5)
    locked, release = threading.Event(), threading.Event()

    def stall() -> None:
        try:
            with transaction.atomic():
                Batch.objects.select_for_update().get(pk=stuck.pk)
                locked.set()
                release.wait(60)
        finally:
            connection.close()

    holder = threading.Thread(target=stall)
    holder.start()
    try:
        assert locked.wait(10)
        with caplog.at_level(logging.WARNING, logger="batches_api.services"):
            report = sweeps.run_all()["batches"]
    finally:
        release.set()
        holder.join()
    assert (fine.id,) in enqueued and (stuck.id,) not in enqueued
    assert report.busy >= 1
    assert any(f"batch {stuck.id} has rows locked" in record.getMessage() for record in caplog.records)
    with connection.cursor() as cursor:  # the sweep's connection is back to waiting as long as it takes
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "0"
    assert services.sweep().finalizations >= 1  # once the row is free, the next sweep takes it
