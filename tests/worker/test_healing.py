"""What production loses, killed for real: the process hosting the engine, an idle task-cluster process (which
used to jam django-q2's internal queue for good), a task-cluster process in the middle of a validation, a
request that kills its engine every time it runs. Each test measures how long the work waited, and checks that
every request ends exactly once. Fake engine here; the real engine's version is in test_vllm_worker.py."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil

from tests.conftest import start_worker, wait_for, wait_for_status
from tests.helpers import upload_batch_file
from tests.worker.test_state_machine import FAKE, chat, results, run_batch

RESUME_SECONDS = 30  # the work of a lost process runs again within this (plus a model load: none here)


def serving_pid(name: str) -> int:
    from batches_api.models import Worker

    return wait_for(
        lambda: Worker.objects.alive().filter(name=name).values_list("pid", flat=True).first(),
        30,
        message=f"the serving loop of worker {name}",
    )


def assert_each_once(lines, output, errors):
    ids = [line["custom_id"] for line in output + errors]
    assert sorted(ids) == sorted(line["custom_id"] for line in lines)


def task_workers(task_cluster) -> list[psutil.Process]:
    """The django-q2 processes of the suite's task cluster that run tasks (not the supervisor, the cluster's
    main process, its sentinel, monitor or pusher)."""
    from batchserver.supervisor import task_workers as of_cluster

    def find():  # the supervisor's one child is the cluster's main process
        clusters = psutil.Process(task_cluster.pid).children()
        return of_cluster(clusters[0].pid) if clusters else []

    return wait_for(find, 30, message="the task cluster's workers")


def test_a_killed_engine_host_is_replaced_and_its_requests_run_again(client, stack_env, task_cluster, db_access):
    from batches_api.models import BatchRequest

    worker = start_worker(stack_env, "healer", [FAKE])
    try:
        lines = [chat(f"h{i}", max_tokens=1 if i % 3 else 2500) for i in range(60)]  # 2500 tokens: about 5 s
        batch = run_batch(client, lines)
        wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 10, 60, message="some results")
        victim = serving_pid("healer")
        held = set(BatchRequest.objects.filter(batch_id=batch.id, status="running").values_list("id", flat=True))
        assert held, "requests should be in flight when the engine's process dies"
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        # Its requests run again on the replacement: claimed by a live worker other than the dead one.
        wait_for(
            lambda: (
                BatchRequest.objects.filter(pk__in=held)
                .exclude(worker__pid=victim)
                .filter(status__in=["running", "responded"])
                .exists()
            ),
            RESUME_SECONDS,
            interval=0.2,
            message="the dead process's requests to run again",
        )
        resumed = time.monotonic() - killed
        batch = wait_for_status(client, batch.id, {"completed"}, timeout=120)
    finally:
        worker.stop()
    output, errors = results(client, batch)
    assert errors == []
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]
    assert batch.request_counts.completed == 60
    print(f"requests running again {resumed:.1f} s after the kill")


def test_a_request_that_kills_its_engine_ends_with_an_error_line_and_spares_the_others(client, stack_env, task_cluster):
    worker = start_worker(stack_env, "crashy", ["fake-crashy"])
    try:
        lines = [chat(f"ok{i}", max_tokens=4) for i in range(6)]
        lines.insert(3, chat("poison", content="please CRASH-THE-ENGINE now"))
        for line in lines:
            line["body"]["model"] = "fake-crashy"
        batch = wait_for_status(client, run_batch(client, lines).id, {"completed"}, timeout=180)
    finally:
        worker.stop()
    output, errors = results(client, batch)
    assert [line["custom_id"] for line in errors] == ["poison"]
    assert errors[0]["error"]["code"] == "server_error"
    assert "no other request beside it" in errors[0]["error"]["message"]
    assert [line["custom_id"] for line in output] == [f"ok{i}" for i in range(6)]  # no innocent was lost
    assert batch.request_counts.model_dump() == {"total": 7, "completed": 6, "failed": 1}
    assert_each_once(lines, output, errors)


def test_a_request_that_kills_the_engine_not_its_process_spares_the_requests_in_flight_with_it(
    client, stack_env, task_cluster, db_access
):
    """vLLM's engine core can die under a live worker process: every request in flight fails with it, and so would
    every request fed to it after. Those failures are the engine's, not the requests': they run again on a new
    engine, and only the request that kills it every time ends with an error line."""
    from inference.models import EngineLoad

    worker = start_worker(stack_env, "dying", ["fake-dying"])
    try:
        lines = [chat(f"ok{i}", max_tokens=5 + 7 * (i % 6)) for i in range(30)]  # 0.05-0.4 s each, in flight
        lines.insert(11, chat("poison", content="please KILL-THE-ENGINE now"))
        for line in lines:
            line["body"]["model"] = "fake-dying"
        batch = wait_for_status(client, run_batch(client, lines).id, {"completed"}, timeout=180)
    finally:
        worker.stop()
    output, errors = results(client, batch)
    assert [line["custom_id"] for line in errors] == ["poison"]
    assert errors[0]["error"]["code"] == "server_error"
    assert sorted(line["custom_id"] for line in output) == sorted(f"ok{i}" for i in range(30))
    assert batch.request_counts.model_dump() == {"total": 31, "completed": 30, "failed": 1}
    assert_each_once(lines, output, errors)
    assert EngineLoad.objects.filter(model="fake-dying").count() >= 2  # the dead engine was replaced


def test_a_killed_idle_task_worker_does_not_jam_validation(client, task_cluster):
    from batches_api.services import INLINE_VALIDATION_BYTES

    idle = [p for p in task_workers(task_cluster) if "idle" in " ".join(p.cmdline())]
    assert idle, "the task cluster should have an idle worker"
    idle[0].kill()  # an idle django-q2 worker holds the cluster's task queue lock while it waits
    started = time.monotonic()
    big = chat("after-kill", content="x " * INLINE_VALIDATION_BYTES)  # validated by the task cluster, not inline
    batch = wait_for_status(client, run_batch(client, [big]).id, {"in_progress", "completed"}, timeout=RESUME_SECONDS)
    print(f"validated {time.monotonic() - started:.1f} s after the kill")
    assert batch.request_counts.total == 1
    client.batches.cancel(batch.id)


def test_a_validation_killed_half_way_runs_again(client, task_cluster, db_access):
    from batches_api.models import Batch, BatchRequest

    lines = [json.dumps(chat(f"v{i}", content="x " * 50)).encode() for i in range(30_000)]
    file = upload_batch_file(client, lines)
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(
        lambda: Batch.objects.filter(pk=batch.id, job_owner__isnull=False).exists(),
        30,
        interval=0.05,
        message="the validation to start",
    )
    running = [p for p in task_workers(task_cluster) if "validate_batch" in " ".join(p.cmdline())]
    assert running, "a task worker should be validating"
    running[0].kill()
    killed = time.monotonic()
    batch = wait_for_status(client, batch.id, {"in_progress"}, timeout=RESUME_SECONDS + 30)
    print(f"validation finished {time.monotonic() - killed:.1f} s after the kill")
    assert batch.request_counts.total == 30_000
    assert BatchRequest.objects.filter(batch_id=batch.id).count() == 30_000
    client.batches.cancel(batch.id)


def test_a_workers_dead_pusher_or_monitor_is_replaced_without_touching_its_serving_process(
    client, stack_env, task_cluster, db_access
):
    """A pusher dies when the database is away for a moment (it cannot reach the broker). django-q2 starts another;
    the worker's serving process, which holds the loaded models, goes on as it was."""
    from batchserver.supervisor import auxiliary_role, cluster_processes

    worker = start_worker(stack_env, "aux", [FAKE])
    try:
        serving = serving_pid("aux")

        def auxiliaries() -> dict[str, int]:
            main = psutil.Process(worker.pid).children()
            found = {}
            for proc in cluster_processes(main[0].pid) if main else []:
                try:  # (a process just killed may be a zombie by now)
                    role = auxiliary_role(" ".join(proc.cmdline()))
                except psutil.Error:
                    continue
                if role:
                    found[role] = proc.pid
            return found

        killed = wait_for(lambda: len(auxiliaries()) == 2 and auxiliaries(), 30, message="the pusher and the monitor")
        lines = [chat(f"x{i}", max_tokens=1 + (i * 37) % 900) for i in range(40)]
        batch = run_batch(client, lines)
        wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 5, 60, message="some results")
        for pid in killed.values():
            os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: (now := auxiliaries()) and len(now) == 2 and not set(now.values()) & set(killed.values()),
            30,
            message="django-q2 to start another pusher and monitor",
        )
        batch = wait_for_status(client, batch.id, {"completed"}, timeout=120)
        time.sleep(3)  # the supervisor looks every second: it has seen the new processes
        assert serving_pid("aux") == serving, "the serving process was replaced (its models reloaded)"
        assert psutil.pid_exists(serving)
    finally:
        worker.stop()
    output, errors = results(client, batch)
    assert errors == []
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]
