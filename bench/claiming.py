"""Claiming: one batch of 50,000 requests claimed and completed by four concurrent worker processes with a
no-op engine. Prints requests per second and checks that no request ran twice into the output.

Usage: .venv/bin/python bench/claiming.py [--requests 50000 --workers 4]
"""

from __future__ import annotations

import argparse
import json
import time

from common import ROOT, chat_lines, submit, wait_done

from tests.stack import Stack


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with Stack("bench_claiming", models_file=ROOT / "bench" / "models.json") as stack:
        stack.start_server()
        client = stack.client()
        batch = submit(client, chat_lines(args.requests, max_tokens=1, model="fake-fast"))
        while client.batches.retrieve(batch.id).status == "validating":
            time.sleep(0.5)
        for i in range(args.workers):
            stack.start_worker(f"c{i}", ["fake-fast"])
        batch = wait_done(client, batch.id, poll=1.0, timeout=3600)
        output = client.files.content(batch.output_file_id).read().splitlines()
        custom_ids = [json.loads(line)["custom_id"] for line in output]
        import psycopg

        with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
            (span,) = conn.execute(
                "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(claimed_at)) FROM "
                "batches_api_batchrequest WHERE batch_id = %s",
                [batch.id],
            ).fetchone()
            per_worker = conn.execute(
                "SELECT w.name, count(*) FROM batches_api_batchrequest r JOIN batches_api_worker w "
                "ON w.id = r.worker_id WHERE r.batch_id = %s GROUP BY w.name ORDER BY w.name",
                [batch.id],
            ).fetchall()
            (runs,) = conn.execute("SELECT coalesce(sum(requests_done), 0) FROM batches_api_worker").fetchone()
    duplicates = len(custom_ids) - len(set(custom_ids))
    print(f"{args.requests} requests, {args.workers} worker processes, no-op engine: {batch.status}")
    print(
        f"claimed and completed at {args.requests / float(span):.0f} requests/s "
        f"(first claim -> last result {float(span):.1f} s)"
    )
    print("per worker: " + ", ".join(f"{name} {n}" for name, n in per_worker))
    print(
        f"output lines {len(custom_ids)}, distinct custom_ids {len(set(custom_ids))}, duplicates {duplicates}; "
        f"results written by workers {runs}"
    )


if __name__ == "__main__":
    main()
