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
from common import ROOT, chat_lines, submit

from tests.stack import Stack


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time (user + system) so far of each part of the stack, of this process (the clients) and of the whole
    machine; what the machine spent beyond them is mostly PostgreSQL."""

    def tree(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    times = proc.cpu_times()
                    total += times.user + times.system
            except psutil.Error:
                continue
        return total

    machine = psutil.cpu_times()
    me = psutil.Process().cpu_times()
    return {
        "clients": me.user + me.system,
        "web": tree([p.pid for p in stack.procs if p.name.endswith("-server")]),
        "task cluster": tree([p.pid for p in stack.procs if p.name.endswith("-tasks")]),
        "workers": tree([p.pid for p in stack.procs if "worker" in p.name]),
        "machine": machine.user + machine.system + getattr(machine, "irq", 0) + getattr(machine, "softirq", 0),
    }


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
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda _: submit(client, lines).id, range(args.batches)))
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
            cpu = {part: seconds - cpu_before[part] for part, seconds in cpu_seconds(stack).items()}
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
    machine = cpu.pop("machine")
    parts = {**cpu, "PostgreSQL and the rest": machine - sum(cpu.values())}
    print(
        f"CPU per batch: {machine / args.batches * 1000:.0f} ms in all on {psutil.cpu_count()} cores ("
        + ", ".join(f"{part} {seconds / args.batches * 1000:.0f} ms" for part, seconds in parts.items())
        + ")"
    )


if __name__ == "__main__":
    main()
