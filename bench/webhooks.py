"""Webhooks: 1,000 small batches finish in a burst (validated first with no worker running, then two workers on a
fast test engine run them all), one endpoint subscribed, a receiver on this machine. Prints the delay from each
batch's final status (completed_at, …) to its delivery arriving at the receiver (p50, p99, max), and deliveries
per second. Every delivery is checked with the SDK's client.webhooks.unwrap.

Usage: .venv/bin/python bench/webhooks.py [--batches 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from common import ROOT, chat_lines, submit

from tests.stack import Stack
from tests.webhooks.receiver import Receiver

FINAL = ("completed", "failed", "cancelled", "expired")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=1000)
    args = parser.parse_args()
    import psycopg

    receiver = Receiver()
    with Stack(
        "bench_webhooks",
        models_file=ROOT / "bench" / "models.json",
        extra_env={"BATCHSERVER_WEBHOOK_ALLOW_PRIVATE": "true"},
    ) as stack:
        stack.start_server()
        client = stack.client()
        endpoint = client.webhooks.create(url=receiver.url, name="bench", event_types=[f"batch.{s}" for s in FINAL])
        lines = chat_lines(2, max_tokens=4, model="fake-fast")
        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(lambda _: submit(client, lines).id, range(args.batches)))
        with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:

            def count(where: str) -> int:
                return conn.execute(f"SELECT count(*) FROM batches_api_batch WHERE {where}").fetchone()[0]

            while count("status = 'validating'"):
                time.sleep(0.5)
            burst = time.time()
            for name in ("w1", "w2"):
                stack.start_worker(name, ["fake-fast"])
            received = receiver.wait(count=args.batches, timeout=900)
            ended = dict(
                conn.execute(
                    "SELECT id, EXTRACT(EPOCH FROM COALESCE(completed_at, failed_at, cancelled_at, expired_at)) "
                    "FROM batches_api_batch"
                ).fetchall()
            )
            not_completed = count("status <> 'completed'")

            def delivered() -> int:
                return conn.execute(
                    "SELECT count(*) FROM webhooks_webhookdelivery WHERE status = 'succeeded'"
                ).fetchone()[0]

            while delivered() < args.batches:
                time.sleep(0.2)
            (attempts,) = conn.execute("SELECT sum(attempts) FROM webhooks_webhookdelivery").fetchone()
            # Then every delivery due again at once, as after a receiver's outage: the sweep queues them (500 a
            # round) and the task cluster's tasks send them.
            again = time.time()
            conn.execute(
                "UPDATE webhooks_webhookdelivery SET status = 'pending', next_attempt_at = now(), enqueued_at = NULL"
            )
            resent = receiver.wait(count=2 * args.batches, timeout=900)[args.batches :]
    receiver.close()
    delays, seen = [], set()
    for delivery in received:
        event = client.webhooks.unwrap(delivery.body, delivery.headers, secret=endpoint.signing_secret)
        seen.add(event.data.id)
        delays.append(delivery.at - float(ended[event.data.id]))
    assert seen == ids, "every batch delivered once"
    first_end = min(float(ended[batch_id]) for batch_id in ids)
    last_arrival = max(delivery.at for delivery in received)
    print(
        f"{args.batches} batches of 2 requests, validated, then finished in a burst by 2 workers (fast test "
        f"engine); task cluster of 2 processes; 1 endpoint, a receiver on this machine"
    )
    print(
        f"batches finished: first {first_end - burst:.1f} s, last {max(map(float, ended.values())) - burst:.1f} s "
        f"after the workers started; not completed: {not_completed}"
    )
    print(
        f"delay final status -> delivery received: p50 {statistics.median(delays):.2f} s, "
        f"p99 {percentile(delays, 0.99):.2f} s, max {max(delays):.2f} s"
    )
    print(
        f"deliveries: {len(received)} in {last_arrival - first_end:.1f} s from the first batch's end, "
        f"{len(received) / (last_arrival - first_end):.1f}/s (the pace of the batches' ends); attempts {attempts} "
        f"(retries: {attempts - len(received)})"
    )
    span = max(delivery.at for delivery in resent) - again
    print(
        f"all {len(resent)} due again at once (the sweep and queued tasks): received in {span:.1f} s, "
        f"{len(resent) / span:.1f}/s"
    )


if __name__ == "__main__":
    main()
