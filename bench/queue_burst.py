"""Queue: 1,000 small batches created in a burst by 16 clients, two workers on the test engine with no delay
(no model: the figure is the queue's own overhead). Prints batches per second finished and the p50/p99 wait from
created to in_progress, and where the machine's CPU went meanwhile (per batch).

Targets: p99 created -> in_progress <= 2 s; >= 100 batches/s finished.
Usage: .venv/bin/python bench/queue_burst.py [--batches 1000] [--clients 16]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
from common import ROOT, chat_lines, cpu_seconds, cpu_since, submit

from tests.stack import Stack


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with Stack("bench_queue", models_file=ROOT / "bench" / "models.json") as stack:
        stack.start_server()
        for name in ("q1", "q2"):
            stack.start_worker(name, ["fake-fast"])
        client = stack.client()
        lines = chat_lines(2, max_tokens=4, model="fake-fast")
        cpu_before = cpu_seconds(stack)
        started = time.monotonic()

        def create(_) -> float:  # seconds the client waited for its upload and its create
            began = time.monotonic()
            submit(client, lines)
            return time.monotonic() - began

        with ThreadPoolExecutor(args.clients) as pool:
            waits = sorted(pool.map(create, range(args.batches)))
        created = time.monotonic() - started
        import psycopg

        with psycopg.connect(stack.env["DATABASE_URL"]) as conn:

            def finished() -> int:
                return conn.execute(
                    "SELECT count(*) FROM batches_api_batch WHERE status IN "
                    "('completed', 'failed', 'cancelled', 'expired')"
                ).fetchone()[0]

            while finished() < args.batches:
                time.sleep(0.5)
            cpu = cpu_since(stack, cpu_before)
            span, p99, p50, failed = conn.execute(
                "SELECT EXTRACT(EPOCH FROM max(completed_at) - min(created_at)), "
                "percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM in_progress_at - created_at)), "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM in_progress_at - created_at)), "
                "count(*) FILTER (WHERE status <> 'completed') FROM batches_api_batch"
            ).fetchone()
    print(
        f"{args.batches} batches of 2 requests, created in {created:.1f} s by {args.clients} client threads; "
        "2 workers (fast test engine), task cluster of 2 processes"
    )
    print(
        f"finished: {args.batches / float(span):.1f} batches/s (first created -> last completed {float(span):.1f} s); "
        f"not completed: {failed}"
    )
    print(f"wait created -> in_progress: p50 {p50:.2f} s, p99 {p99:.2f} s")
    print(
        f"client's wait for upload + create: p50 {waits[len(waits) // 2]:.2f} s, "
        f"p99 {waits[min(len(waits) - 1, len(waits) * 99 // 100)]:.2f} s"
    )
    print(
        f"CPU per batch: {sum(cpu.values()) / args.batches * 1000:.0f} ms in all on {psutil.cpu_count()} cores ("
        + ", ".join(f"{part} {seconds / args.batches * 1000:.0f} ms" for part, seconds in cpu.items() if seconds)
        + ")"
    )


if __name__ == "__main__":
    main()
