"""Worker processes die and stop: nothing lost, nothing run twice, nothing left behind. Fake engine (the real
engine's versions are in test_vllm_worker.py); no other worker serves its model during these tests."""

from __future__ import annotations

import signal
import sys
import time

import psutil

from tests.conftest import start_worker, wait_for, wait_for_status
from tests.worker.test_state_machine import FAKE, chat, results, run_batch


def test_killed_worker_loses_nothing_and_runs_nothing_twice(client, stack_env, task_cluster, db_access):
    from batches_api.models import BatchRequest

    first = start_worker(stack_env, "crashy", [FAKE])
    lines = [chat(f"c{i}", max_tokens=1 if i % 2 else 3000) for i in range(60)]  # 3000 tokens: about 6 s
    batch = run_batch(client, lines)
    wait_for(
        lambda: client.batches.retrieve(batch.id).request_counts.completed >= 10,
        60,
        message="some results to be written",
    )
    first.crash()  # SIGKILL, no goodbye
    assert BatchRequest.objects.filter(batch_id=batch.id, status="running").exists()
    second = start_worker(stack_env, "crashy", [FAKE])
    try:
        batch = wait_for_status(client, batch.id, {"completed"}, timeout=120)
    finally:
        second.stop()
    output, errors = results(client, batch)
    assert errors == []
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]
    assert batch.request_counts.completed == 60


def test_sigterm_stops_the_worker_and_gives_back_its_work(client, stack_env, task_cluster, db_access):
    from batches_api.models import BatchRequest

    worker = start_worker(stack_env, "stoppable", [FAKE])
    batch = run_batch(client, [chat(f"s{i}", max_tokens=4000) for i in range(5)])
    wait_for(lambda: BatchRequest.objects.filter(batch_id=batch.id, status="running").count() == 5, 30)
    tree = worker.tree()
    took = worker.stop(signal.SIGTERM)
    assert took < 10
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    assert BatchRequest.objects.filter(batch_id=batch.id, status="pending").count() == 5
    client.batches.cancel(batch.id)


def test_runtasks_stops_within_10_s_and_leaves_nothing(stack_env):
    from tests.stack import Proc

    tasks = Proc("tasks-stop", [sys.executable, "manage.py", "runtasks"], stack_env)
    wait_for(lambda: len(tasks.tree()) >= 6, 30, message="the task cluster's processes")  # supervisor + cluster
    tree = tasks.tree()
    took = tasks.stop(signal.SIGTERM)
    assert took < 10, f"stopping took {took:.1f} s"
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_killed_supervisor_takes_its_cluster_with_it_and_gives_back_the_work(
    client, stack_env, task_cluster, db_access
):
    from batches_api.models import BatchRequest

    worker = start_worker(stack_env, "orphaned", [FAKE])
    batch = run_batch(client, [chat(f"o{i}", max_tokens=4000) for i in range(4)])
    wait_for(lambda: BatchRequest.objects.filter(batch_id=batch.id, status="running").count() == 4, 30)
    tree = worker.tree()
    psutil.Process(worker.pid).kill()  # the supervisor only, as `kill -9 <runworker>` does
    started = time.monotonic()
    wait_for(
        lambda: not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
        10,
        interval=0.2,
        message="the cluster of the killed supervisor to stop by itself",
    )
    print(f"cluster gone {time.monotonic() - started:.1f} s after its supervisor")
    assert BatchRequest.objects.filter(batch_id=batch.id, status="pending").count() == 4  # given back
    client.batches.cancel(batch.id)
