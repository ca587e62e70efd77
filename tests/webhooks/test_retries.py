"""Retries end to end, on a deployment of its own (a fresh database, gunicorn, the task cluster) whose backoff is
configured short: BATCHSERVER_WEBHOOK_RETRY_SECONDS=1,2 and a sweep every half second. (The suite's shared stack
keeps the default 5 s, 30 s, …; its task cluster would otherwise take part in these deliveries.)"""

from __future__ import annotations

import psycopg
import pytest

from tests.stack import Stack, wait_for
from tests.webhooks.conftest import create_batch
from tests.webhooks.receiver import Receiver


@pytest.fixture(scope="module")
def fast_retries():
    with Stack(
        "webhook_retries",
        extra_env={
            "BATCHSERVER_WEBHOOK_RETRY_SECONDS": "1,2",
            "BATCHSERVER_SWEEP_SECONDS": "0.5",
            "BATCHSERVER_WEBHOOK_ALLOW_PRIVATE": "true",
        },
    ) as stack:
        stack.start_server()
        yield stack


def test_a_receiver_failing_twice_gets_three_attempts_with_one_webhook_id(fast_retries):
    client = fast_retries.client()
    receiver = Receiver(answers=[500, 500])
    try:
        endpoint = client.webhooks.create(url=receiver.url, name="flaky", event_types=["batch.cancelled"])
        batch = create_batch(client)
        client.batches.cancel(batch.id)
        first, second, third = receiver.for_batch(batch.id, count=3, timeout=60)
    finally:
        receiver.close()
    assert [r.answered for r in (first, second, third)] == [500, 500, 200]
    assert first.webhook_id == second.webhook_id == third.webhook_id
    assert first.body == second.body == third.body
    for received in (first, second, third):
        event = client.webhooks.unwrap(received.body, received.headers, secret=endpoint.signing_secret)
        assert event.type == "batch.cancelled" and event.data.id == batch.id
    # The backoff: 1 s, then 2 s (plus up to one sweep), never sooner.
    assert 1 <= second.at - first.at < 5 and 2 <= third.at - second.at < 6

    with psycopg.connect(fast_retries.env["DATABASE_URL"]) as conn:

        def recorded():
            return conn.execute(
                "SELECT status, attempts, last_status_code FROM webhooks_webhookdelivery WHERE id = %s",
                [first.webhook_id],
            ).fetchone() == ("succeeded", 3, 200)

        wait_for(recorded, 10, message="the delivery recorded as succeeded after 3 attempts")
