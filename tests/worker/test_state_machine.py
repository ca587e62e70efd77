"""The batch state machine with a real worker process, a real django-q2 cluster and PostgreSQL, on the fake
engine (deliberately slow, clearly a test engine) so that timing-dependent paths are quick and repeatable.
The real engine runs the same paths in test_vllm_worker.py."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tests.conftest import start_worker, wait_for, wait_for_status
from tests.helpers import parse_jsonl, request_line, upload_batch_file

FAKE = "fake-echo"


def chat(custom_id: str, max_tokens: int = 4, content: str | None = None) -> dict:
    return request_line(
        custom_id,
        body={
            "model": FAKE,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content or f"say {custom_id}"}],
        },
    )


def run_batch(client, lines, endpoint="/v1/chat/completions"):
    file = upload_batch_file(client, lines)
    return client.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window="24h")


def results(client, batch):
    output = parse_jsonl(client.files.content(batch.output_file_id).read()) if batch.output_file_id else []
    errors = parse_jsonl(client.files.content(batch.error_file_id).read()) if batch.error_file_id else []
    return output, errors


def assert_each_once(lines_in, output, errors):
    ids = [line["custom_id"] for line in output + errors]
    assert sorted(ids) == sorted(line["custom_id"] for line in lines_in)


@pytest.fixture(scope="module")
def fake_worker(stack_env, task_cluster):
    proc = start_worker(stack_env, "fake-1", [FAKE])
    yield proc
    if proc.alive():
        proc.stop()


def test_batch_completes_with_ordered_output_and_usage(client, fake_worker, db_access):
    lines = [chat(f"r{i}", max_tokens=3 + i % 5) for i in range(40)]
    batch = wait_for_status(client, run_batch(client, lines).id, {"completed"}, timeout=60)
    output, errors = results(client, batch)
    assert errors == [] and batch.error_file_id is None
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]  # input order
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["body"]["object"] == "chat.completion"
    assert batch.request_counts.model_dump() == {"total": 40, "completed": 40, "failed": 0}
    usage = [line["response"]["body"]["usage"] for line in output]
    assert batch.usage.input_tokens == sum(u["prompt_tokens"] for u in usage) > 0
    assert batch.usage.output_tokens == sum(u["completion_tokens"] for u in usage) > 0
    assert batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens
    assert batch.in_progress_at <= batch.finalizing_at <= batch.completed_at


def test_rejected_request_is_its_own_400_line(client, fake_worker):
    lines = [chat("ok-1"), chat("too-long", content="word " * 10000), chat("ok-2")]
    batch = wait_for_status(client, run_batch(client, lines).id, {"completed"}, timeout=60)
    output, errors = results(client, batch)
    by_id = {line["custom_id"]: line for line in output}
    assert by_id["too-long"]["response"]["status_code"] == 400
    assert set(by_id["too-long"]["response"]["body"]["error"]) == {"message", "type", "param", "code"}
    assert by_id["ok-1"]["response"]["status_code"] == by_id["ok-2"]["response"]["status_code"] == 200
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}
    assert errors == []


def test_progress_is_visible_while_running_and_cancel_keeps_finished_work(client, fake_worker):
    lines = [chat(f"fast-{i}", max_tokens=1) for i in range(5)] + [
        chat(f"slow-{i}", max_tokens=4000) for i in range(10)
    ]
    batch = run_batch(client, lines)
    running = wait_for(
        lambda: (b := client.batches.retrieve(batch.id)).request_counts.completed >= 5 and b,
        30,
        message="the fast requests to finish",
    )
    assert running.status == "in_progress"
    started = time.monotonic()
    client.batches.cancel(batch.id)
    batch = wait_for_status(client, batch.id, {"cancelled"}, timeout=10)
    assert time.monotonic() - started < 5
    output, errors = results(client, batch)
    assert {line["custom_id"] for line in output} == {f"fast-{i}" for i in range(5)}
    assert {line["custom_id"] for line in errors} == {f"slow-{i}" for i in range(10)}
    assert all(line["error"]["code"] == "batch_cancelled" and line["response"] is None for line in errors)
    assert_each_once(lines, output, errors)


def test_expiry_keeps_completed_work_and_reports_the_rest(client, fake_worker, db_access):
    from batches_api.models import Batch

    lines = [chat(f"fast-{i}", max_tokens=1) for i in range(3)] + [chat(f"slow-{i}", max_tokens=4000) for i in range(4)]
    batch = run_batch(client, lines)
    wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 3, 30)
    Batch.objects.filter(pk=batch.id).update(
        expires_at=Batch.objects.get(pk=batch.id).created_at - timedelta(seconds=1)
    )
    batch = wait_for_status(client, batch.id, {"expired"}, timeout=15)
    assert batch.expired_at is not None
    output, errors = results(client, batch)
    assert {line["custom_id"] for line in output} == {f"fast-{i}" for i in range(3)}
    assert [line["error"]["code"] for line in errors] == ["batch_expired"] * 4
    assert_each_once(lines, output, errors)


def test_small_batch_is_not_starved_by_a_big_one(client, fake_worker):
    # Big requests of varied length, as real ones are: the engine frees a slot every few milliseconds.
    big = run_batch(client, [chat(f"big-{i}", max_tokens=500 + (i * 137) % 3500) for i in range(1000)])
    wait_for_status(client, big.id, {"in_progress"}, timeout=30)
    time.sleep(1)
    started = time.monotonic()
    small = wait_for_status(
        client, run_batch(client, [chat(f"small-{i}") for i in range(3)]).id, {"completed"}, timeout=60
    )
    took = time.monotonic() - started
    assert client.batches.retrieve(big.id).status == "in_progress"  # the big one is still running
    assert took < 10, f"a 3-request batch waited {took:.1f} s behind a big one"
    assert small.request_counts.completed == 3
    client.batches.cancel(big.id)
    wait_for_status(client, big.id, {"cancelled"}, timeout=15)


def test_two_batches_in_a_row_load_the_engine_once(client, fake_worker, db_access):
    from batches_api.models import Worker
    from inference.models import EngineLoad

    for _ in range(2):
        wait_for_status(client, run_batch(client, [chat("a"), chat("b")]).id, {"completed"}, timeout=30)
    worker = Worker.objects.get(pid__in=[p.pid for p in fake_worker.tree()], stopped_at__isnull=True)
    assert EngineLoad.objects.filter(worker=worker).count() == 1
    assert worker.requests_done >= 4
    assert worker.is_alive


def test_score_and_rerank_batches_run_through_the_worker(client, fake_worker):
    documents = ["a cat sits", "stocks fell", "a kitten sleeps", "rain tomorrow"]
    rerank = [
        request_line(f"rr{i}", url="/v1/rerank", body={"model": FAKE, "query": f"cat {i}", "documents": documents})
        for i in range(3)
    ] + [
        request_line("all", url="/v1/rerank", body={"model": FAKE, "query": "cat", "documents": documents}),
        request_line("top", url="/v1/rerank", body={"model": FAKE, "query": "cat", "documents": documents, "top_n": 2}),
        request_line("bad", url="/v1/rerank", body={"model": FAKE, "query": "cat", "documents": []}),
    ]
    batch = wait_for_status(client, run_batch(client, rerank, "/v1/rerank").id, {"completed"}, timeout=60)
    output, errors = results(client, batch)
    assert errors == [] and [line["custom_id"] for line in output] == [line["custom_id"] for line in rerank]
    by_id = {line["custom_id"]: line["response"] for line in output}
    assert by_id["bad"]["status_code"] == 400
    assert by_id["bad"]["body"]["error"]["message"] == "At least one text_pair element must be given"
    for custom_id in ("rr0", "rr1", "rr2", "all"):
        found = by_id[custom_id]["body"]["results"]
        assert sorted(r["index"] for r in found) == [0, 1, 2, 3]
        assert [r["relevance_score"] for r in found] == sorted((r["relevance_score"] for r in found), reverse=True)
    assert by_id["top"]["body"]["results"] == by_id["all"]["body"]["results"][:2]
    assert batch.request_counts.model_dump() == {"total": 6, "completed": 5, "failed": 1}
    prompt_tokens = sum(by_id[c]["body"]["usage"]["prompt_tokens"] for c in ("rr0", "rr1", "rr2", "all", "top"))
    assert batch.usage.input_tokens == prompt_tokens > 0 and batch.usage.output_tokens == 0

    score = [
        request_line("pairs", url="/v1/score", body={"model": FAKE, "text_1": ["a", "b"], "text_2": ["a", "c"]}),
        request_line("one-to-many", url="/v1/score", body={"model": FAKE, "queries": "a", "documents": documents}),
    ]
    batch = wait_for_status(client, run_batch(client, score, "/v1/score").id, {"completed"}, timeout=60)
    output, errors = results(client, batch)
    assert errors == [] and batch.request_counts.completed == 2
    bodies = {line["custom_id"]: line["response"]["body"] for line in output}
    assert bodies["pairs"]["object"] == "list" and bodies["pairs"]["data"][0]["score"] == pytest.approx(1.0)
    assert [d["index"] for d in bodies["one-to-many"]["data"]] == [0, 1, 2, 3]
    assert batch.usage.input_tokens == sum(b["usage"]["prompt_tokens"] for b in bodies.values()) > 0
