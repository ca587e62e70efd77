"""A worker keeps several models loaded at once within its memory budget: it preloads them and says when it is
ready, feeds them concurrently, and unloads the least recently used idle one when another must come in, never
one with requests in flight. Fake engine (each fake model weighs 1 GB in tests/models.json)."""

from __future__ import annotations

import httpx

from tests.conftest import start_worker, wait_for, wait_for_status
from tests.worker.test_state_machine import chat, results, run_batch


def lines_for(model: str, n: int, max_tokens: int, prefix: str) -> list[dict]:
    lines = [chat(f"{prefix}{i}", max_tokens=max_tokens) for i in range(n)]
    for line in lines:
        line["body"]["model"] = model
    return lines


def test_a_worker_preloads_its_models_and_says_when_it_is_ready(server, stack_env, db_access):
    from batches_api.models import Worker
    from inference.models import EngineLoad

    worker = start_worker(stack_env, "preloader", ["fake-echo", "fake-slow-load"])
    try:
        loading = wait_for(lambda: Worker.objects.alive().filter(name="preloader").first(), 30)
        checks = httpx.get(f"{server}/readyz").json()["checks"]
        assert checks["model:fake-slow-load"] == "a worker is loading it"  # it takes 4 s to load
        # Its row says what it loads and since when (its supervisor gives a loading worker more time to report).
        wait_for(
            lambda: Worker.objects.filter(pk=loading.pk, loading_model="fake-slow-load", loading_since__isnull=False),
            10,
            message="the row to say what the worker loads",
        )
        ready = wait_for(
            lambda: Worker.objects.filter(pk=loading.pk, ready_at__isnull=False).first(),
            30,
            message="the worker to be ready",
        )
        assert sorted(ready.loaded_models) == ["fake-echo", "fake-slow-load"]
        assert (ready.loading_model, ready.loading_since) == ("", None)
        assert sorted(EngineLoad.objects.filter(worker=ready).values_list("model", flat=True)) == [
            "fake-echo",
            "fake-slow-load",
        ]
        assert httpx.get(f"{server}/readyz").json()["checks"]["model:fake-slow-load"] == "ok"
    finally:
        worker.stop()


def test_two_models_are_served_at_the_same_time_without_a_load_between(client, stack_env, task_cluster, db_access):
    from batches_api.models import BatchRequest, Worker
    from inference.models import EngineLoad

    worker = start_worker(stack_env, "two-models", ["fake-echo", "fake-echo-b"])
    try:
        a = run_batch(client, lines_for("fake-echo", 30, 1500, "a"))  # about 3 s a request
        b = run_batch(client, lines_for("fake-echo-b", 30, 1500, "b"))

        def both_running():
            running = set(
                BatchRequest.objects.filter(batch_id__in=[a.id, b.id], status="running")
                .values_list("batch_id", flat=True)
                .distinct()
            )
            return running == {a.id, b.id}

        wait_for(both_running, 30, interval=0.1, message="requests of both models in flight at once")
        for batch in (a, b):
            assert wait_for_status(client, batch.id, {"completed"}, timeout=60).request_counts.completed == 30
        run = Worker.objects.get(name="two-models", stopped_at__isnull=True)
        assert EngineLoad.objects.filter(worker=run).count() == 2  # each model loaded once, at start
    finally:
        worker.stop()


def test_the_least_recently_used_model_makes_room_only_once_its_requests_are_done(
    client, stack_env, task_cluster, db_access
):
    from batches_api.models import Worker
    from inference.models import EngineLoad

    # Room for one 1 GB model: serving the other means unloading the first.
    worker = start_worker(
        stack_env, "one-at-a-time", ["fake-echo", "fake-echo-b"], {"BATCHSERVER_WORKER_MEMORY_GB": "1.5"}
    )
    try:
        a_lines = lines_for("fake-echo", 20, 1000, "a")  # about 2 s a request
        a = run_batch(client, a_lines)
        wait_for(lambda: client.batches.retrieve(a.id).request_counts.completed >= 1, 30)
        b_lines = lines_for("fake-echo-b", 5, 2, "b")
        b = run_batch(client, b_lines)
        outcomes = {batch.id: wait_for_status(client, batch.id, {"completed"}, timeout=90) for batch in (a, b)}
        run = Worker.objects.get(name="one-at-a-time", stopped_at__isnull=True)
        loads = list(EngineLoad.objects.filter(worker=run).order_by("started_at").values_list("model", flat=True))
        assert loads[:2] == ["fake-echo", "fake-echo-b"]  # fake-echo preloaded; fake-echo-b after it drained
    finally:
        worker.stop()
    for batch, lines in ((outcomes[a.id], a_lines), (outcomes[b.id], b_lines)):
        output, errors = results(client, batch)
        assert errors == []
        assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]
    # a's requests were never cut short to make room: every one ran to its length
    assert all(
        line["response"]["body"]["usage"]["completion_tokens"] == 1000 for line in results(client, outcomes[a.id])[0]
    )
