"""Fair share on the real engine (SmolLM2, one worker): two projects on one model.

1. B's wait: project A queues 6 batches of 120 mixed chat requests (720 in all); once A's requests fill the engine,
   project B submits one batch of 10. Prints B's time from in_progress to its first result and to completed, and
   how much of A's work was still waiting then.
2. Shares: weights A 1, B 3, both with more work than the engine holds; prints each project's share of the
   requests answered over a window of --window seconds (target 25/75 within 10%), opened once the engine's first
   fill (A's, which came first) has turned over.

Each is run twice: with vLLM's first-come-first-served queue (`"scheduling_policy": "fcfs"`), then with its
priority scheduling (the worker's default for vLLM engines: each request gets its project's place from
batches_api.scheduling), so the output says what vLLM's priority scheduling adds.

Usage: .venv/bin/python bench/fairness.py [--window 60] [--policies fcfs,priority]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time

import psycopg
from common import CHAT_MODEL, ROOT, mixed_chat_lines, submit, wait_done

from tests.stack import Stack

MODELS = {"fcfs": CHAT_MODEL, "priority": f"{CHAT_MODEL}-priority"}


def models_file():
    """SmolLM2 twice: with vLLM's first-come-first-served queue, and with its priority scheduling (the worker's
    default for vLLM engines)."""
    models = json.loads((ROOT / "tests" / "models.json").read_text())
    chat = models[CHAT_MODEL]
    models = {
        MODELS[policy]: {**chat, "engine_args": {**chat["engine_args"], "scheduling_policy": policy}}
        for policy in ("fcfs", "priority")
    }
    path = ROOT / "var" / "bench_fairness_models.json"
    path.write_text(json.dumps(models))
    return path


def mixed_lines(model: str, tag: str, n: int, rng: random.Random) -> list[dict]:
    """Mixed chat requests with no system prompt, drawn from the run's one generator."""
    return mixed_chat_lines(tag, n, model, rng=rng, max_words=80, system_share=0)


def second_key(stack: Stack, project: str) -> str:
    created = subprocess.run(
        [sys.executable, "manage.py", "apikey", "create", "--name", project, "--new-project", project],
        cwd=ROOT,
        env=stack.env,
        check=True,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip()


def query(stack: Stack, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def cancel(client, batches) -> None:
    for batch in batches:
        if client.batches.retrieve(batch.id).status in ("validating", "in_progress"):
            client.batches.cancel(batch.id)
    for batch in batches:
        wait_done(client, batch.id, poll=0.5)


def requests_of(stack, batch_ids, status: str) -> int:
    return query(
        stack,
        "SELECT count(*) FROM batches_api_batchrequest WHERE batch_id = ANY(%s) AND status = %s",
        [list(batch_ids), status],
    )[0][0]


def b_waits(stack, a, b, model: str, rng: random.Random, policy: str) -> None:
    backlog = [submit(a, mixed_lines(model, f"{policy}-a{i}", 120, rng)) for i in range(6)]
    ids = [batch.id for batch in backlog]
    while requests_of(stack, ids, "running") < 200:
        time.sleep(0.5)
    time.sleep(5)  # the engine full and busy
    small = wait_done(b, submit(b, mixed_lines(model, f"{policy}-b", 10, rng)).id, poll=0.2)
    (started, first, ended) = query(
        stack,
        "SELECT b.in_progress_at, min(r.finished_at), b.completed_at FROM batches_api_batch b "
        "JOIN batches_api_batchrequest r ON r.batch_id = b.id WHERE b.id = %s GROUP BY b.id",
        [small.id],
    )[0]
    waiting = requests_of(stack, ids, "pending") + requests_of(stack, ids, "running")
    cancel(a, backlog)
    print(
        f"[{policy}] B's 10-request batch behind A's 720: first result {(first - started).total_seconds():.1f} s "
        f"after in_progress, completed {(ended - started).total_seconds():.1f} s after; A still had {waiting} "
        "requests waiting or running",
        flush=True,
    )


def shares(stack, a, b, model: str, rng: random.Random, policy: str, window: float) -> None:
    query(stack, "UPDATE batchserver_project SET weight = CASE WHEN name = 'fair-b' THEN 3 ELSE 1 END")
    a_batches = [submit(a, mixed_lines(model, f"{policy}-wa{i}", 400, rng)) for i in range(2)]
    b_batches = [submit(b, mixed_lines(model, f"{policy}-wb{i}", 600, rng)) for i in range(3)]
    ids = {batch.id: "A" for batch in a_batches} | {batch.id: "B" for batch in b_batches}
    # The window opens once the engine's first fill has turned over: A's batches came first and took every slot,
    # so the requests claimed before B's first one must all have ended before the shares can show.
    while not (
        first_b := query(
            stack,
            "SELECT min(claimed_at) FROM batches_api_batchrequest WHERE batch_id = ANY(%s)",
            [[i for i, who in ids.items() if who == "B"]],
        )[0][0]
    ):
        time.sleep(0.5)
    while query(
        stack,
        "SELECT count(*) FROM batches_api_batchrequest WHERE batch_id = ANY(%s) AND claimed_at < %s "
        "AND status = 'running'",
        [list(ids), first_b],
    )[0][0]:
        time.sleep(0.5)
    (since,) = query(stack, "SELECT now()")[0]
    time.sleep(window)
    rows = query(
        stack,
        "SELECT batch_id, count(*) FROM batches_api_batchrequest WHERE batch_id = ANY(%s) AND status = 'responded' "
        "AND finished_at >= %s GROUP BY batch_id",
        [list(ids), since],
    )
    done = {"A": 0, "B": 0}
    for batch_id, n in rows:
        done[ids[batch_id]] += n
    cancel(a, a_batches)
    cancel(b, b_batches)
    query(stack, "UPDATE batchserver_project SET weight = 1")
    total = done["A"] + done["B"]
    print(
        f"[{policy}] weights 1:3 over {window:.0f} s: {total} requests answered, A {done['A'] / total:.3f}, "
        f"B {done['B'] / total:.3f} (target 0.25 / 0.75, within 10%)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument("--policies", default="fcfs,priority")
    args = parser.parse_args()
    rng = random.Random(7)
    with Stack("bench_fairness", models_file=models_file()) as stack:
        stack.start_server()
        a = stack.client()
        from openai import OpenAI

        b = OpenAI(base_url=f"{stack.url}/v1", api_key=second_key(stack, "fair-b"), max_retries=2, timeout=120)
        for policy in args.policies.split(","):
            model = MODELS[policy]
            worker = stack.start_worker(policy, [model])
            wait_done(a, submit(a, mixed_lines(model, f"{policy}-warm", 4, rng)).id, poll=0.5)
            b_waits(stack, a, b, model, rng, policy)
            shares(stack, a, b, model, rng, policy, args.window)
            worker.stop()


if __name__ == "__main__":
    main()
