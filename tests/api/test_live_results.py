"""The live views of a batch, extensions of OpenAI's API, against the live server with a real worker on the fake
engine: GET /v1/batches/{id}/results (the result lines so far, in completion order, each exactly as the output or
error file holds it at the end). The SDK's raw requests reach the paths it has no method for."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import start_worker
from tests.helpers import request_line, upload_batch_file

FAKE = "fake-echo"  # 2 ms per output token
FINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture(scope="module")
def live_worker(stack_env, task_cluster):
    # A few requests at once, so that a batch of 200 ends over some seconds rather than all at the same moment.
    proc = start_worker(stack_env, "live", [FAKE], {"BATCHSERVER_WORKER_MAX_INFLIGHT": "24"})
    yield proc
    proc.stop()


def chat(custom_id: str, max_tokens: int, content: str | None = None, model: str = FAKE) -> dict:
    return request_line(
        custom_id,
        body={
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content or f"say {custom_id}"}],
        },
    )


def create(client, lines: list[dict]):
    file = upload_batch_file(client, lines)
    return client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")


def results_page(client, batch_id: str, after: int, limit: int) -> httpx.Response:
    return client.get(
        f"/batches/{batch_id}/results", cast_to=httpx.Response, options={"params": {"after": after, "limit": limit}}
    )


def follow_results(client, batch_id: str, *, limit: int = 37, on_page=None, timeout: float = 120) -> tuple[list, list]:
    """Read the batch's lines as a client that follows it does, from the first one until the batch is final and
    nothing more is there. Returns the lines (bytes, with their newline) and each page's (status, line count)."""
    cursor, lines, pages = 0, [], []
    deadline = time.monotonic() + timeout
    while True:
        response = results_page(client, batch_id, cursor, limit)
        assert response.headers["content-type"] == "application/x-ndjson"
        page = response.content.splitlines(keepends=True)
        assert len(page) <= limit and all(line.endswith(b"\n") for line in page)
        status, has_more = response.headers["x-batch-status"], response.headers["x-has-more"]
        following = int(response.headers["x-next-cursor"])
        assert following > cursor if page else following == cursor
        cursor = following
        lines.extend(page)
        pages.append((status, len(page)))
        if on_page:
            on_page(lines)
        if has_more == "false":
            if status in FINAL:
                return lines, pages
            assert time.monotonic() < deadline, f"batch {batch_id} did not finish in {timeout} s"
            time.sleep(0.1)


def file_lines(client, file_id: str | None) -> list[bytes]:
    return client.files.content(file_id).read().splitlines(keepends=True) if file_id else []


def test_a_client_following_results_gets_every_line_once_exactly_as_the_files_hold_them(client, live_worker):
    import json

    lines = [chat(f"r{i}", 20 + (i * 53) % 300, content=("word " * 9000) if i % 25 == 7 else None) for i in range(200)]
    batch = create(client, lines)
    got, pages = follow_results(client, batch.id)

    batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    output, errors = file_lines(client, batch.output_file_id), file_lines(client, batch.error_file_id)
    assert len(output) == 200 and errors == []
    assert sorted(got) == sorted(output)  # each line once, byte for byte as in the file
    parsed = [json.loads(line) for line in got]
    assert sorted(line["custom_id"] for line in parsed) == sorted(line["custom_id"] for line in lines)
    assert sum(line["response"]["status_code"] == 400 for line in parsed) == 8  # the prompts too long for the model
    # Live: lines came while the batch was running, over several pages.
    assert sum(count for status, count in pages if status == "in_progress") > 0
    assert sum(1 for _, count in pages if count) >= 200 // 37


def test_lines_of_requests_that_never_ran_come_too_when_a_batch_is_cancelled(client, live_worker):
    import json

    batch = create(client, [chat(f"c{i}", 400) for i in range(120)])
    cancelled = []

    def cancel_after_some(lines: list) -> None:
        if len(lines) >= 30 and not cancelled:
            cancelled.append(client.batches.cancel(batch.id))

    got, _ = follow_results(client, batch.id, limit=10, on_page=cancel_after_some)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "cancelled" and cancelled
    output, errors = file_lines(client, batch.output_file_id), file_lines(client, batch.error_file_id)
    assert errors, "a cancelled batch of 120 slow requests has requests that never ran"
    assert sorted(got) == sorted(output + errors)
    assert {json.loads(line)["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert len(got) == 120


# ------------------------------------------------------------------------------------------------ refusals
def test_another_projects_key_gets_the_404_that_retrieve_gives(client, other_client):
    batch = create(client, [chat("mine", 4)])
    with pytest.raises(openai.NotFoundError) as retrieve:
        other_client.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError) as refused:
        other_client.get(f"/batches/{batch.id}/results", cast_to=httpx.Response)
    assert refused.value.response.json() == retrieve.value.response.json()
    assert refused.value.response.json()["error"]["message"] == f"No such batch: '{batch.id}'"


@pytest.mark.parametrize(
    ("params", "param", "words"),
    [
        ({"limit": 0}, "limit", "between 1 and 10000"),
        ({"limit": 10_001}, "limit", "between 1 and 10000"),
        ({"limit": "many"}, "limit", "expected an integer"),
        ({"after": -1}, "after", "never negative"),
        ({"after": "batch_req_abc"}, "after", "x-next-cursor"),
        ({"after": 10**30}, "after", "past the last result line"),
        ({"after": 5}, "after", "past the last result line"),
    ],
)
def test_bad_limit_or_after_is_a_400_in_openais_shape(client, params, param, words):
    batch = create(client, [chat("p", 4, model="fake-echo-b")])  # no worker serves it here: no line yet
    with pytest.raises(openai.BadRequestError) as refused:
        client.get(f"/batches/{batch.id}/results", cast_to=httpx.Response, options={"params": params})
    error = refused.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert words in error["message"], error["message"]
    client.batches.cancel(batch.id)
