"""The live views of a batch, extensions of OpenAI's API, against the live server with a real worker on the fake
engine: GET /v1/batches/{id}/results (the result lines so far, in completion order, each exactly as the output or
error file holds it at the end) and GET /v1/batches/{id}/events (the batch object as server-sent events, at each
change of status or request counts). The SDK's raw requests reach the paths it has no method for."""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import httpx
import openai
import psutil
import pytest

from tests.conftest import start_web, start_worker, wait_for, wait_for_status
from tests.helpers import request_line, upload_batch_file
from tests.stack import pause

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


# ------------------------------------------------------------------------------------------------ events
def read_events(response: httpx.Response, on_event=None) -> list[dict]:
    """The server-sent events of a response until the server closes it: each a dict of its fields, with the time
    it arrived; a block with only `retry` counts as one too. `on_event(event)` is called as each one arrives."""
    events, fields = [], {}
    for line in response.iter_lines():
        if line == "":
            if fields:
                events.append({**fields, "at": time.monotonic()})
                if on_event is not None:
                    on_event(events[-1])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    return events


def open_events(http: httpx.Client, batch_id: str, last_event_id: str | None = None):
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return http.stream("GET", f"/v1/batches/{batch_id}/events", headers=headers, timeout=60)


def test_events_send_every_status_and_the_progress_then_close_at_the_final_one(client, http, live_worker, task_cluster):
    import json

    from batches_api.services import INLINE_VALIDATION_BYTES

    # An input over INLINE_VALIDATION_BYTES is validated by the task cluster, paused until the stream has sent
    # its first event: the stream opens while the batch is validating, however fast validation is.
    lines = [chat(f"e{i}", 30 + (i * 37) % 400, content="pad " * (INLINE_VALIDATION_BYTES // 400)) for i in range(100)]
    assert len(json.dumps(lines)) > INLINE_VALIDATION_BYTES
    cluster = pause(task_cluster.tree())

    def resume(_event=None) -> None:  # once: the list empties
        while cluster:
            with contextlib.suppress(psutil.Error):
                cluster.pop().send_signal(signal.SIGCONT)

    try:
        batch = create(client, lines)
        with open_events(http, batch.id) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            events = read_events(response, on_event=resume)
    finally:
        resume()
    closed = time.monotonic()

    assert events[0] == {"retry": "3000", "at": events[0]["at"]}
    events = events[1:]
    objects = [json.loads(event["data"]) for event in events]
    statuses = [obj["status"] for obj in objects]
    assert list(dict.fromkeys(statuses)) == ["validating", "in_progress", "finalizing", "completed"], statuses
    assert statuses.count("in_progress") >= 3, "progress is sent while the batch runs"
    ended = [obj["request_counts"]["completed"] + obj["request_counts"]["failed"] for obj in objects]
    assert ended == sorted(ended) and ended[-1] == 100
    assert len({event["id"] for event in events}) == len(events)
    # The last event is the final object, byte for byte as GET /v1/batches/{id} answers it, and the stream
    # closed right after it.
    assert events[-1]["data"].encode() == http.get(f"/v1/batches/{batch.id}").content
    assert closed - events[-1]["at"] < 1

    # A client that reconnects with the final event's id has everything: 204 (EventSource stops there).
    with open_events(http, batch.id, last_event_id=events[-1]["id"]) as response:
        assert response.status_code == 204
    # One that lost the end of the stream gets what came after its last event: each status once, then the end.
    running = next(event for event in events if json.loads(event["data"])["status"] == "in_progress")
    with open_events(http, batch.id, last_event_id=running["id"]) as response:
        resumed = read_events(response)[1:]
    assert [event["data"] for event in resumed] == [
        event["data"] for event in events if json.loads(event["data"])["status"] in ("finalizing", "completed")
    ]
    # A new client starts from the object now, and the stream ends at once: the batch is final.
    with open_events(http, batch.id) as response:
        fresh = read_events(response)[1:]
    assert [event["data"] for event in fresh] == [events[-1]["data"]]


# ------------------------------------------------------------------------------------------------ refusals
def test_another_projects_key_gets_the_404_that_retrieve_gives(client, other_client):
    batch = create(client, [chat("mine", 4)])
    with pytest.raises(openai.NotFoundError) as retrieve:
        other_client.batches.retrieve(batch.id)
    for path in ("results", "events"):
        with pytest.raises(openai.NotFoundError) as refused:
            other_client.get(f"/batches/{batch.id}/{path}", cast_to=httpx.Response)
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


# ------------------------------------------------------------------------------------------------ threads
@pytest.fixture(scope="module")
def small_server(stack_env):
    """A web server with one process of two threads: one stream may be open, the other thread answers the API."""
    proc, url = start_web("live-small", {**stack_env, "BATCHSERVER_EVENT_STREAM_SECONDS": "6"}, workers=1, threads=2)
    yield url
    proc.stop()


def open_streams(server: str) -> float:
    text = httpx.get(f"{server}/metrics").text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("batchserver_event_streams "))


def test_streams_never_take_the_threads_the_api_needs(client, keys, small_server):
    batch = create(client, [chat("w", 4, model="fake-echo-b")])  # no worker serves it here: it stays in_progress
    wait_for_status(client, batch.id, {"in_progress"}, timeout=30)
    auth = {"Authorization": f"Bearer {keys['alice']}"}
    with httpx.Client(base_url=small_server, headers=auth, timeout=30) as http:
        first: dict = {}

        def hold_the_stream() -> None:
            with open_events(http, batch.id) as response:
                first["opened"] = time.monotonic()
                first["events"] = read_events(response)
            first["closed"] = time.monotonic()

        holder = threading.Thread(target=hold_the_stream)
        holder.start()
        wait_for(lambda: open_streams(small_server) == 1, 10, message="the first stream to hold its thread")

        # The second stream finds no free slot: it gets the events due and closes at once, to come back later.
        started = time.monotonic()
        with open_events(http, batch.id) as response:
            second = read_events(response)
        assert time.monotonic() - started < 2
        assert second[0]["retry"] == "3000" and '"status":"in_progress"' in second[1]["data"]
        # And the API answers meanwhile.
        started = time.monotonic()
        assert http.get(f"/v1/batches/{batch.id}").status_code == 200
        assert time.monotonic() - started < 1

        # The first stream ends by itself after BATCHSERVER_EVENT_STREAM_SECONDS, for its client to reconnect.
        holder.join(15)
        assert not holder.is_alive()
        assert 5 <= first["closed"] - first["opened"] <= 9
        wait_for(lambda: open_streams(small_server) == 0, 5, message="the slot to be free again")

        # A client that goes away frees its slot at once, not at the stream's next write.
        with open_events(http, batch.id) as response:
            lines = response.iter_lines()  # kept: a line iterator dropped half way closes the connection
            next(lines)
            wait_for(lambda: open_streams(small_server) == 1, 5, message="the stream to open")
        gone = time.monotonic()
        wait_for(lambda: open_streams(small_server) == 0, 5, interval=0.05, message="the stream of a client gone")
        assert time.monotonic() - gone < 2
    client.batches.cancel(batch.id)


@pytest.mark.parametrize(("threads", "streams"), [(1, 0), (2, 1), (4, 2), (8, 4), (12, 8), (32, 28)])
def test_a_process_keeps_four_threads_for_the_api_and_half_when_it_has_fewer_than_eight(threads, streams, settings):
    from batchserver.streams import StreamSlots

    settings.BATCHSERVER_EVENT_STREAMS = -1
    slots = StreamSlots()
    slots.configure(threads=threads)
    assert slots.limit == streams
    settings.BATCHSERVER_EVENT_STREAMS = 3  # set: that many, whatever the threads
    assert slots.limit == 3
