"""Limits for many projects on one server, through the official SDK over HTTP against the live server (two gunicorn
workers), the real task cluster and PostgreSQL: enqueued tokens per project and model, the request rate of each API
key, batches in flight and stored bytes per project. The fake engine counts whitespace-separated words as tokens,
so a line's tokens are known exactly; no worker serves fake-echo-b here, so its batches stay in_progress."""

from __future__ import annotations

import io
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import start_web, start_worker, wait_for, wait_for_status
from tests.helpers import jsonl, request_line, upload_batch_file

FAKE = "fake-echo"
IDLE = "fake-echo-b"  # no worker serves it in this module: its batches stay in_progress
RESET = re.compile(r"^(\d+h)?(\d+m)?\d+(\.\d+)?s$|^\d+ms$")  # OpenAI's (Go's) durations: 1s, 6m0s, 1.5s, 20ms


def words(custom_id: str, n: int, model: str = FAKE) -> dict:
    """A chat request of exactly n tokens for the fake engine."""
    return request_line(
        custom_id, body={"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "w " * n}]}
    )


def new_project(server: str, name: str, *, rpm: int | None = None, **limits):
    """A project of its own (its limits apply to nothing else) with one key; returns an SDK client and the project."""
    from batchserver.services import api_key_create, api_key_set_rate_limit, project_set_limits

    key, raw = api_key_create(name=f"{name}-key", new_project=f"{name}-{uuid.uuid4().hex[:6]}")
    project = project_set_limits(project=key.project, **limits)
    if rpm is not None:
        api_key_set_rate_limit(key=key, requests_per_minute=rpm)
    return OpenAI(base_url=f"{server}/v1", api_key=raw, max_retries=0, timeout=60), project


def create(client, file_id: str):
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")


@contextmanager
def project_row_held(stack_env, project):
    """Hold the project's row as a limit's check does, so that requests which check it at the same moment wait for
    it together; yields a function that counts them. On leaving, the row is let go and they take their turns."""
    import psycopg
    from django.db import connection

    def waiting() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE %s",
                ["%batchserver_project%FOR NO KEY UPDATE%"],
            )
            return cursor.fetchone()[0]

    with psycopg.connect(stack_env["DATABASE_URL"]) as holder:
        holder.execute("SELECT id FROM batchserver_project WHERE id = %s FOR NO KEY UPDATE", [project.pk])
        yield waiting
        holder.rollback()


def cancel_all(client, batches) -> None:
    for batch in batches:
        client.batches.cancel(batch.id)
    for batch in batches:
        wait_for_status(client, batch.id, {"cancelled"}, timeout=30)


# ------------------------------------------------------------------------------------------------ enqueued tokens
def test_a_batch_past_the_enqueued_token_limit_fails_then_runs_once_the_running_one_completed(
    server, task_cluster, stack_env, db_access
):
    from batches_api.models import Batch
    from batches_api.selectors import project_usage

    client, project = new_project(server, "tokens", enqueued_tokens={FAKE: 1500})
    running = create(client, upload_batch_file(client, [words(f"a{i}", 100) for i in range(10)]).id)  # 1,000 tokens
    wait_for_status(client, running.id, {"in_progress"}, timeout=30)
    assert Batch.objects.get(pk=running.id).enqueued_tokens == 1000
    assert project_usage(project).enqueued_tokens[FAKE] == (1000, 1500)  # what the console shows

    second_file = upload_batch_file(client, [words(f"b{i}", 100) for i in range(6)])  # 600 more: 1,600 > 1,500
    refused = wait_for_status(client, create(client, second_file.id).id, {"failed", "in_progress"}, timeout=30)
    assert refused.status == "failed"
    assert refused.errors.model_dump() == {
        "object": "list",
        "data": [
            {
                "code": "token_limit_exceeded",
                "line": None,
                "param": None,
                "message": f"Enqueued token limit reached for {FAKE} in project {project.name}. Limit: 1,500 "
                "enqueued tokens. Please try again once some in_progress batches have been completed.",
            }
        ],
    }
    assert refused.failed_at is not None and refused.request_counts.total == 0

    worker = start_worker(stack_env, "limits-fake", [FAKE])
    try:
        done = wait_for_status(client, running.id, {"completed"}, timeout=90)
        assert done.usage.input_tokens == 1000  # the engine's count is the one validation made
        assert project_usage(project).enqueued_tokens[FAKE] == (0, 1500)
        again = wait_for_status(client, create(client, second_file.id).id, {"completed", "failed"}, timeout=60)
        assert again.status == "completed" and again.request_counts.completed == 6
    finally:
        worker.stop()


def test_two_batches_validated_at_once_do_not_both_pass_the_limit(server, task_cluster, stack_env, db_access):
    """Each batch fits alone, not both: the two validations reach the limit's check at the same moment (the test
    holds the project's row until both wait for it), and the second one counts the first."""
    client, project = new_project(server, "race", enqueued_tokens={IDLE: 1000})
    files = [upload_batch_file(client, [words(f"{k}{i}", 100, IDLE) for i in range(6)]) for k in "xy"]  # 600 each
    with project_row_held(stack_env, project) as waiting:
        batches = [create(client, file.id) for file in files]
        wait_for(lambda: waiting() >= 2, 30, message="both validations to wait for the project's row")
    final = [wait_for_status(client, b.id, {"in_progress", "failed"}, timeout=30) for b in batches]
    assert sorted(b.status for b in final) == ["failed", "in_progress"]
    refused = next(b for b in final if b.status == "failed")
    assert [e.code for e in refused.errors.data] == ["token_limit_exceeded"]
    cancel_all(client, [b for b in final if b.status == "in_progress"])


# ------------------------------------------------------------------------------------------------ request rate
def test_rate_limit_answers_429_as_openai_and_the_sdk_retry_passes_through(server, task_cluster, db_access):
    client, project = new_project(server, "rate", rpm=30)  # 30 at once, then one more every 2 s
    first = client.models.with_raw_response.list()
    assert first.headers["x-ratelimit-limit-requests"] == "30"
    assert first.headers["x-ratelimit-remaining-requests"] == "29"
    assert RESET.match(first.headers["x-ratelimit-reset-requests"])
    refused = None
    for _ in range(60):  # 29 more fit; one more every 2 s while they are sent
        try:
            client.models.list()
        except openai.RateLimitError as error:
            refused = error
            break
    assert refused is not None
    response = refused.response
    assert response.status_code == 429
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "requests" and body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["param"] is None
    assert re.fullmatch(
        rf"Rate limit reached for API key sk-bs-\S+… in project {project.name} on requests per min \(RPM\): Limit "
        r"30, Used 30, Requested 1\. Please try again in \d+(\.\d+)?s\. .+",
        body["error"]["message"],
    ), body["error"]["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 2
    assert response.headers["x-ratelimit-limit-requests"] == "30"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert RESET.match(response.headers["x-ratelimit-reset-requests"])

    # The SDK's own retry (max_retries) waits as retry-after says, and its call succeeds. Two calls: the first may
    # take a request that came back meanwhile; the second finds none left.
    statuses: list[int] = []
    hooks = {"response": [lambda r: statuses.append(r.status_code)]}
    with httpx.Client(event_hooks=hooks, timeout=60) as http:
        patient = OpenAI(base_url=client.base_url, api_key=client.api_key, max_retries=2, http_client=http)
        assert patient.models.list().data and patient.models.list().data
    assert statuses.count(200) == 2 and statuses[-2:] == [429, 200], statuses


def test_the_rate_limit_is_shared_by_every_worker_of_every_server(server, task_cluster, stack_env, db_access):
    """Eleven requests at once, against a limit of ten per minute, spread over two servers (two gunicorns, two
    workers each): exactly one is refused. A count kept by each process would refuse none."""
    client, _ = new_project(server, "shared", rpm=10)
    other, other_url = start_web("server-limits", stack_env)
    try:
        urls = [server, other_url] * 6

        def call(url: str) -> int:
            headers = {"Authorization": f"Bearer {client.api_key}"}
            return httpx.get(f"{url}/v1/models", headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=11) as pool:
            statuses = list(pool.map(call, urls[:11]))
    finally:
        other.stop()
    assert sorted(statuses) == [200] * 10 + [429]


# ------------------------------------------------------------------------------------------------ batches in flight
def test_batches_in_flight_are_limited_with_a_429_and_creates_that_race_take_turns(
    server, task_cluster, stack_env, db_access
):
    client, project = new_project(server, "inflight", max_batches_in_flight=2)
    file = upload_batch_file(client, [words("one", 3, IDLE)])
    with ThreadPoolExecutor(max_workers=6) as pool:
        with project_row_held(stack_env, project) as waiting:
            futures = [pool.submit(_try, lambda: create(client, file.id)) for _ in range(6)]
            wait_for(lambda: waiting() >= 3, 30, message="the creates to wait for the project's row")
        outcomes = [future.result() for future in futures]
    created = [o for o in outcomes if not isinstance(o, openai.APIStatusError)]
    refused = [o for o in outcomes if isinstance(o, openai.APIStatusError)]
    assert len(created) == 2 and len(refused) == 4
    error = refused[0]
    assert isinstance(error, openai.RateLimitError) and error.status_code == 429
    assert error.body == {
        "message": f"Batch limit reached for project {project.name}: 2 batches are validating, in_progress or "
        "finalizing. Limit: 2 batches in flight. Please try again once some in_progress batches have been "
        "completed, or cancel one.",
        "type": "batches",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    cancel_all(client, created[:1])
    third = create(client, file.id)  # one left the flight: room for one more
    assert third.status == "validating"
    cancel_all(client, [created[1], third])


# ------------------------------------------------------------------------------------------------ stored bytes
def test_uploads_past_the_storage_limit_are_refused_and_concurrent_ones_take_turns(
    server, task_cluster, stack_env, db_access
):
    client, project = new_project(server, "storage", max_stored_bytes=1000)

    def upload(size: int, name: str = "data.txt"):
        return client.files.create(file=(name, io.BytesIO(b"x" * size)), purpose="user_data")

    kept = upload(600)
    with pytest.raises(openai.BadRequestError) as refused:
        upload(600)
    assert refused.value.body["code"] == "storage_limit_exceeded" and refused.value.body["param"] == "file"
    assert refused.value.body["message"].startswith(
        f"Project '{project.name}' stores 600 bytes of files; 600 bytes more would take it past its storage limit "
        "of 1,000 bytes. Delete files it no longer needs"
    )

    # The Uploads API: an Upload that cannot fit is refused when it is created, a part when it comes.
    with pytest.raises(openai.BadRequestError) as refused:
        client.uploads.create(bytes=500, filename="big.txt", mime_type="text/plain", purpose="user_data")
    assert refused.value.body["param"] == "bytes" and refused.value.body["code"] == "storage_limit_exceeded"
    started = client.uploads.create(bytes=300, filename="parts.txt", mime_type="text/plain", purpose="user_data")
    part = client.uploads.parts.create(started.id, data=b"y" * 300)
    with pytest.raises(openai.BadRequestError):  # the pending part counts: 600 + 300 + 200 > 1,000
        upload(200)
    assert client.uploads.complete(started.id, part_ids=[part.id]).status == "completed"

    # Space freed is space to use; uploads that race for the last of it take turns.
    client.files.delete(kept.id)  # 300 stored now: room for one 400-byte file, not two
    with ThreadPoolExecutor(max_workers=4) as pool:
        with project_row_held(stack_env, project) as waiting:
            futures = [pool.submit(_try, lambda i=i: upload(400, f"r{i}.txt")) for i in range(4)]
            wait_for(lambda: waiting() >= 2, 30, message="the uploads to wait for the project's row")
        outcomes = [future.result() for future in futures]
    assert sum(not isinstance(o, openai.BadRequestError) for o in outcomes) == 1
    assert sum(f.bytes for f in client.files.list()) == 700


def _try(call):
    try:
        return call()
    except openai.APIStatusError as error:
        return error


def test_without_limits_nothing_is_counted_or_refused(client, http):
    """The defaults are unlimited: no rate-limit headers, no refusal."""
    response = http.get("/v1/models")
    assert response.status_code == 200
    assert "x-ratelimit-limit-requests" not in response.headers


def test_a_batch_counts_its_models_tokens_not_its_size(server, task_cluster, db_access):
    """A line's count is its model's: the fake engine's words, whatever the line's size in bytes."""
    from batches_api.models import Batch

    client, _ = new_project(server, "exact", enqueued_tokens={IDLE: 7})
    lines = [words("a", 3, IDLE), words("b", 4, IDLE)]
    assert len(jsonl(lines)) > 7 * 4  # an estimate by size would refuse it
    batch = wait_for_status(
        client, create(client, upload_batch_file(client, lines).id).id, {"in_progress", "failed"}, timeout=30
    )
    assert batch.status == "in_progress" and Batch.objects.get(pk=batch.id).enqueued_tokens == 7
    cancel_all(client, [batch])
