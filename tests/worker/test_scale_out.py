"""Several workers share the work: one batch split between two workers without overlap, a worker killed
mid-way loses nothing, and workers only take batches of the models they serve. Fake engine, deliberately
slow (the real engine's end-to-end tests are in test_vllm_worker.py)."""

from __future__ import annotations

import httpx
from django.db.models import Count
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_worker, wait_for, wait_for_status
from tests.helpers import parse_jsonl, request_line, upload_batch_file


def lines_for(model: str, n: int, max_tokens: int) -> list[dict]:
    return [
        request_line(
            f"{model}-{i}",
            body={"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": f"hi {i}"}]},
        )
        for i in range(n)
    ]


def submit(client, lines):
    file = upload_batch_file(client, lines)
    return client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")


def test_two_workers_share_one_batch_and_one_dies_midway(client, stack_env, task_cluster, db_access):
    from batches_api.models import BatchRequest

    env = {"BATCHSERVER_WORKER_MAX_INFLIGHT": "16"}  # small windows, so both take part
    first = start_worker(stack_env, "share-1", ["fake-echo"], env)
    second = start_worker(stack_env, "share-2", ["fake-echo"], env)
    try:
        lines = lines_for("fake-echo", 300, max_tokens=150)  # ~0.3 s each at 16 in flight per worker
        batch = submit(client, lines)
        wait_for(
            lambda: (
                BatchRequest.objects.filter(batch_id=batch.id, status="responded")
                .values("worker__name")
                .distinct()
                .count()
                == 2
            ),
            60,
            message="both workers to finish some",
        )
        first.crash()
        batch = wait_for_status(client, batch.id, {"completed"}, timeout=120)
    finally:
        second.stop()
    output = parse_jsonl(client.files.content(batch.output_file_id).read())
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]  # each exactly once
    assert batch.error_file_id is None
    done_by = dict(
        BatchRequest.objects.filter(batch_id=batch.id).values_list("worker__name").annotate(n=Count("pk")).order_by()
    )
    assert set(done_by) == {"share-1", "share-2"}, done_by
    assert sum(done_by.values()) == 300


def test_worker_only_takes_batches_of_its_models(client, server, stack_env, task_cluster, db_access):
    from batches_api.models import BatchRequest

    only_a = start_worker(stack_env, "only-a", ["fake-echo"])
    try:
        batch_b = submit(client, lines_for("fake-echo-b", 5, max_tokens=2))
        batch_a = wait_for_status(
            client, submit(client, lines_for("fake-echo", 5, max_tokens=2)).id, {"completed"}, timeout=60
        )
        assert batch_a.request_counts.completed == 5
        # The A worker is idle and alive, yet the B batch waits untouched, and /metrics says why.
        assert client.batches.retrieve(batch_b.id).status == "in_progress"
        assert not BatchRequest.objects.filter(batch_id=batch_b.id).exclude(status="pending").exists()
        metrics = {f.name: f.samples for f in text_string_to_metric_families(httpx.get(f"{server}/metrics").text)}
        waiting = [s.value for s in metrics["batchserver_batches_without_worker"] if s.labels["model"] == "fake-echo-b"]
        assert waiting == [1.0]
        only_b = start_worker(stack_env, "only-b", ["fake-echo-b"])
        try:
            batch_b = wait_for_status(client, batch_b.id, {"completed"}, timeout=60)
        finally:
            only_b.stop()
    finally:
        only_a.stop()
    assert set(BatchRequest.objects.filter(batch_id=batch_b.id).values_list("worker__name", flat=True)) == {"only-b"}
