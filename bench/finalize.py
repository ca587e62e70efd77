"""Finalizing a big batch: 50,000 requests run on the test engine with no delay, then the time from the last
result to `completed` (both files written) and how much the task cluster's memory grew while it finalized.

Targets: <= 5 s, memory growth <= 100 MB. Usage: .venv/bin/python bench/finalize.py [--requests 50000]
"""

from __future__ import annotations

import argparse
import threading

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
        baseline = tree_rss(tasks.pid)
        peak = [baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], tree_rss(tasks.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stack.start_worker("w", ["fake-fast"], {"BATCHSERVER_WORKER_MAX_INFLIGHT": "4096"})
        batch = wait_done(client, batch.id, poll=0.5, timeout=3600)
        done.set()
        with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
            (seconds,) = conn.execute(
                "SELECT EXTRACT(EPOCH FROM b.completed_at - max(r.finished_at)) FROM batches_api_batch b "
                "JOIN batches_api_batchrequest r ON r.batch_id = b.id WHERE b.id = %s GROUP BY b.completed_at",
                [batch.id],
            ).fetchone()
        output = client.files.retrieve(batch.output_file_id)
    print(
        f"{args.requests:,} requests, {batch.status}: last result -> completed {float(seconds):.2f} s "
        f"(output file {output.bytes / 1e6:.1f} MB); task cluster memory {baseline / 1e6:.0f} MB -> peak "
        f"{peak[0] / 1e6:.0f} MB (+{(peak[0] - baseline) / 1e6:.0f} MB)"
    )


if __name__ == "__main__":
    main()
