"""Claim-and-persist at GPU scale: a batch of 50,000 requests claimed, run and persisted by one worker, then
another by four workers at once, on the test engine with no delay (the figure is the worker's own path:
claiming, feeding, writing results) and PostgreSQL. Checks that no request ran twice into the output.

Targets: one worker >= 10,000 requests/s, four >= 20,000/s, and four never slower than one.
Usage: .venv/bin/python bench/claiming.py [--requests 50000] [--workers 1,4] [--inflight 4096]
"""

from __future__ import annotations

import argparse
import json
import time

import psycopg
from common import ROOT, chat_lines, submit, wait_done

from tests.stack import Stack


def measure(stack: Stack, client, requests: int, workers: int, inflight: int, round_: int) -> float:
    batch = submit(client, chat_lines(requests, max_tokens=1, model="fake-fast", prefix=f"r{round_}-"))
    while client.batches.retrieve(batch.id).status == "validating":
        time.sleep(0.5)
    procs = [
        stack.start_worker(f"c{round_}-{i}", ["fake-fast"], {"BATCHSERVER_WORKER_MAX_INFLIGHT": str(inflight)})
        for i in range(workers)
    ]
    batch = wait_done(client, batch.id, poll=1.0, timeout=3600)
    for proc in procs:
        proc.stop()
        stack.procs.remove(proc)
    output = client.files.content(batch.output_file_id).read().splitlines()
    custom_ids = [json.loads(line)["custom_id"] for line in output]
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        (span,) = conn.execute(
            "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(claimed_at)) FROM batches_api_batchrequest "
            "WHERE batch_id = %s",
            [batch.id],
        ).fetchone()
        per_worker = conn.execute(
            "SELECT w.name, count(*) FROM batches_api_batchrequest r JOIN batches_api_worker w ON w.id = r.worker_id "
            "WHERE r.batch_id = %s GROUP BY w.name ORDER BY w.name",
            [batch.id],
        ).fetchall()
    rate = requests / float(span)
    duplicates = len(custom_ids) - len(set(custom_ids))
    print(
        f"{workers} worker{'s' if workers > 1 else ''}: {batch.status}, {rate:,.0f} requests/s claimed, run and "
        f"persisted (first claim -> last result {float(span):.1f} s); per worker "
        + ", ".join(f"{n:,}" for _, n in per_worker)
        + f"; output lines {len(custom_ids):,}, distinct {len(set(custom_ids)):,}, duplicates {duplicates}"
    )
    assert batch.status == "completed" and duplicates == 0 and len(custom_ids) == requests
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--inflight", type=int, default=4096)
    args = parser.parse_args()
    print(
        f"{args.requests:,} requests a round, test engine with no delay, {args.inflight} in flight per worker, "
        "PostgreSQL; all on one machine"
    )
    rates = {}
    with Stack("bench_claiming", models_file=ROOT / "bench" / "models.json") as stack:
        stack.start_server()
        client = stack.client()
        for round_, workers in enumerate(int(n) for n in args.workers.split(",")):
            rates[workers] = measure(stack, client, args.requests, workers, args.inflight, round_)
    if len(rates) > 1:
        one, many = rates[min(rates)], rates[max(rates)]
        print(f"{max(rates)} workers / {min(rates)}: ratio {many / one:.2f} (adding workers must never lower it)")


if __name__ == "__main__":
    main()
