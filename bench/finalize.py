"""Finalizing a big batch: 50,000 requests run on the test engine with no delay, then the time from the last
result to `completed` (both files written) and how much memory grew meanwhile in the worker (which finalizes the
batches it finished) and in the task cluster (which finalizes what a worker leaves).

Targets: <= 5 s, memory growth <= 100 MB. Usage: .venv/bin/python bench/finalize.py [--requests 50000]
"""

from __future__ import annotations

import argparse
import threading
import time

import psutil
import psycopg
from common import ROOT, chat_lines, submit, wait_done

from tests.stack import Stack


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args()
    with Stack("bench_finalize", models_file=ROOT / "bench" / "models.json") as stack:
        stack.start_server()
        tasks = next(p for p in stack.procs if p.name.endswith("-tasks"))
        client = stack.client()
        batch = submit(client, chat_lines(args.requests, max_tokens=8, model="fake-fast"))
        while client.batches.retrieve(batch.id).status == "validating":
            threading.Event().wait(0.5)
        worker = stack.start_worker("w", ["fake-fast"], {"BATCHSERVER_WORKER_MAX_INFLIGHT": "4096"})
        # The worker that wrote the last result finalizes the batch (the task cluster only if it does not):
        # both processes' memory is sampled, and each one's growth from the last result to the end is shown.
        samples: list[tuple[float, int, int]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                samples.append((time.time(), tree_rss(worker.pid), tree_rss(tasks.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        batch = wait_done(client, batch.id, poll=0.5, timeout=3600)
        done.set()
        sampler.join()
        with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
            last_result, completed = conn.execute(
                "SELECT EXTRACT(EPOCH FROM max(r.finished_at)), EXTRACT(EPOCH FROM b.completed_at) "
                "FROM batches_api_batch b JOIN batches_api_batchrequest r ON r.batch_id = b.id WHERE b.id = %s "
                "GROUP BY b.completed_at",
                [batch.id],
            ).fetchone()
        output = client.files.retrieve(batch.output_file_id)
    last_result, completed = float(last_result), float(completed)
    before = [s for s in samples if s[0] <= last_result][-1]
    during = [s for s in samples if last_result <= s[0] <= completed + 0.1] or [before]
    growth = {
        name: (before[i] / 1e6, max(s[i] for s in during) / 1e6) for i, name in ((1, "worker"), (2, "task cluster"))
    }
    print(
        f"{args.requests:,} requests, {batch.status}: last result -> completed {completed - last_result:.2f} s "
        f"(output file {output.bytes / 1e6:.1f} MB); memory from the last result to the end: "
        + "; ".join(f"{name} {a:.0f} MB -> peak {b:.0f} MB (+{b - a:.0f} MB)" for name, (a, b) in growth.items())
    )


if __name__ == "__main__":
    main()
