"""PostgreSQL restarts in the middle of a batch: the web server, the task cluster and the worker reconnect by
themselves, the worker in the same serving process, and the batch completes with every request exactly once."""

from __future__ import annotations

import time

import psutil
from openai import OpenAI

from tests.conftest import start_worker, wait_for, wait_for_status
from tests.stack import restart_postgresql
from tests.worker.test_healing import serving_pid
from tests.worker.test_state_machine import FAKE, chat, results, run_batch


def test_a_postgresql_restart_mid_batch_loses_and_repeats_nothing(server, keys, stack_env, task_cluster, db_access):
    from django.db import connections

    # The SDK retries what a restart answers (503, or a dropped connection), as any client should.
    client = OpenAI(base_url=f"{server}/v1", api_key=keys["alice"], max_retries=8, timeout=60)
    worker = start_worker(stack_env, "pg-restart", [FAKE])
    try:
        lines = [chat(f"p{i}", max_tokens=1 + (i * 53) % 400) for i in range(200)]
        batch = run_batch(client, lines)
        wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 20, 60, message="progress")
        serving = serving_pid("pg-restart")
        restart_postgresql()
        connections.close_all()  # this test's own connection died with the server
        restarted = time.monotonic()
        batch = wait_for_status(client, batch.id, {"completed"}, timeout=180)
        print(f"batch completed {time.monotonic() - restarted:.1f} s after the restart")
        assert worker.alive(), worker.tail()
        # The worker rode it out in the same serving process: no fresh cluster, no model loaded again (its
        # django-q2 pusher, which dies when it cannot reach the broker, is replaced by django-q2 alone).
        assert psutil.pid_exists(serving) and serving_pid("pg-restart") == serving, worker.tail()
    finally:
        worker.stop()
    output, errors = results(client, batch)
    assert errors == []
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]
    assert batch.request_counts.model_dump() == {"total": 200, "completed": 200, "failed": 0}
