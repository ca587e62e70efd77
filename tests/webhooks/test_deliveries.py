"""Deliveries end to end: real batches on the real stack (gunicorn, the task cluster, a fake-engine worker) reach
each final status, and the receiver gets exactly OpenAI's event, signed the way the SDK verifies it."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from openai import InvalidWebhookSignatureError
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchExpiredWebhookEvent,
    BatchFailedWebhookEvent,
)

from tests.conftest import start_worker, wait_for, wait_for_status
from tests.webhooks.conftest import create_batch

UNSERVED = "fake-echo-b"  # no worker of this module serves it: its batches wait in_progress


@pytest.fixture(scope="module")
def fake_worker(stack_env, task_cluster):
    proc = start_worker(stack_env, "webhooks", ["fake-echo"])
    yield proc
    if proc.alive():
        proc.stop()


def assert_is_openai_event(client, received, secret: str, *, event_type: str, batch_id: str, created_at: int):
    event = client.webhooks.unwrap(received.body, received.headers, secret=secret)
    assert received.event == {
        "id": event.id,
        "object": "event",
        "type": event_type,
        "created_at": created_at,
        "data": {"id": batch_id},
    }
    assert event.id.startswith("evt_") and received.webhook_id.startswith("wh_")
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-signature"].startswith("v1,")
    return event


def test_completed_batch_is_delivered_and_verifies_with_the_sdk(client, fake_worker, make_endpoint, receiver):
    endpoint = make_endpoint(receiver.url, ["batch.completed"])
    assert client.webhooks.test(endpoint.id, event_type="batch.completed").status_code == 200
    sample = receiver.wait()[0]
    assert client.webhooks.unwrap(sample.body, sample.headers, secret=endpoint.signing_secret).type == "batch.completed"

    batch = wait_for_status(client, create_batch(client).id, {"completed"}, timeout=60)
    received = receiver.for_batch(batch.id)[0]
    event = assert_is_openai_event(
        client,
        received,
        endpoint.signing_secret,
        event_type="batch.completed",
        batch_id=batch.id,
        created_at=batch.completed_at,
    )
    assert isinstance(event, BatchCompletedWebhookEvent)

    # Any byte changed, in the body or in a signed header, and the SDK refuses it.
    body = received.body
    for position in (0, len(body) // 2, len(body) - 1):
        tampered = body[:position] + bytes([body[position] ^ 0x01]) + body[position + 1 :]
        with pytest.raises(InvalidWebhookSignatureError):
            client.webhooks.unwrap(tampered, received.headers, secret=endpoint.signing_secret)
    for header in ("webhook-id", "webhook-timestamp"):
        value = received.headers[header]
        tampered = value[:-1] + ("1" if value[-1] != "1" else "2")
        with pytest.raises(InvalidWebhookSignatureError):
            client.webhooks.unwrap(body, {**received.headers, header: tampered}, secret=endpoint.signing_secret)
    with pytest.raises(InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, received.headers, secret="whsec_" + "A" * 32)


def test_validation_failure_delivers_batch_failed(client, make_endpoint, receiver, task_cluster):
    endpoint = make_endpoint(receiver.url, ["batch.failed"])
    bad = create_batch(client, custom=b'{"custom_id": "a", "method": "POST"\n')
    batch = wait_for_status(client, bad.id, {"failed"}, timeout=60)
    event = assert_is_openai_event(
        client,
        receiver.for_batch(batch.id)[0],
        endpoint.signing_secret,
        event_type="batch.failed",
        batch_id=batch.id,
        created_at=batch.failed_at,
    )
    assert isinstance(event, BatchFailedWebhookEvent)


def test_cancel_delivers_batch_cancelled_only_to_subscribers(client, make_endpoint, receiver, task_cluster):
    from tests.webhooks.receiver import Receiver

    endpoint = make_endpoint(receiver.url, ["batch.cancelled"])
    deaf = Receiver()
    make_endpoint(deaf.url, ["batch.completed", "batch.failed", "batch.expired"], name="not cancelled")
    try:
        batch = create_batch(client, model=UNSERVED)
        client.batches.cancel(batch.id)
        batch = wait_for_status(client, batch.id, {"cancelled"}, timeout=60)
        event = assert_is_openai_event(
            client,
            receiver.for_batch(batch.id)[0],
            endpoint.signing_secret,
            event_type="batch.cancelled",
            batch_id=batch.id,
            created_at=batch.cancelled_at,
        )
        assert isinstance(event, BatchCancelledWebhookEvent)
        assert [r for r in deaf.received if r.event["data"]["id"] == batch.id] == []
    finally:
        deaf.close()


def test_expiry_delivers_batch_expired(client, make_endpoint, receiver, task_cluster, db_access):
    from batches_api.models import Batch

    endpoint = make_endpoint(receiver.url, ["batch.expired"])
    batch = wait_for_status(client, create_batch(client, model=UNSERVED).id, {"in_progress"}, timeout=60)
    # Its window ended long ago (and so did its validation job's, so the sweep need not wait for that job).
    created_at = Batch.objects.get(pk=batch.id).created_at
    Batch.objects.filter(pk=batch.id).update(expires_at=created_at - timedelta(seconds=1), job_enqueued_at=None)
    batch = wait_for_status(client, batch.id, {"expired"}, timeout=30)
    event = assert_is_openai_event(
        client,
        receiver.for_batch(batch.id)[0],
        endpoint.signing_secret,
        event_type="batch.expired",
        batch_id=batch.id,
        created_at=batch.expired_at,
    )
    assert isinstance(event, BatchExpiredWebhookEvent)


def test_every_subscribed_endpoint_gets_its_own_delivery(client, make_endpoint, receiver, task_cluster, db_access):
    from tests.webhooks.receiver import Receiver
    from webhooks.models import WebhookDelivery

    other = Receiver()
    try:
        first = make_endpoint(receiver.url, ["batch.cancelled"], name="first")
        second = make_endpoint(other.url, ["batch.cancelled"], name="second")
        batch = create_batch(client, model=UNSERVED)
        client.batches.cancel(batch.id)
        one, two = receiver.for_batch(batch.id)[0], other.for_batch(batch.id)[0]
        assert one.body == two.body  # one event...
        assert one.webhook_id != two.webhook_id  # ...and a delivery (a webhook-id) per endpoint
        client.webhooks.unwrap(one.body, one.headers, secret=first.signing_secret)
        client.webhooks.unwrap(two.body, two.headers, secret=second.signing_secret)
        with pytest.raises(InvalidWebhookSignatureError):
            client.webhooks.unwrap(two.body, two.headers, secret=first.signing_secret)
        rows = WebhookDelivery.objects.filter(event__batch_id=batch.id)
        wait_for(lambda: not rows.exclude(status="succeeded").exists(), 10, message="both deliveries recorded")
        assert {(row.endpoint_id, row.status, row.attempts, row.last_status_code) for row in rows} == {
            (first.id, "succeeded", 1, 200),
            (second.id, "succeeded", 1, 200),
        }
    finally:
        other.close()


def test_rotate_secret_keeping_the_old_one_signs_with_both(client, make_endpoint, receiver):
    endpoint = make_endpoint(receiver.url, ["batch.completed"])
    old = endpoint.signing_secret
    rotated = client.webhooks.rotate_secret(endpoint.id, keep_old_secret_active_for_24_hours=True)
    new = rotated.signing_secret
    assert new.startswith("whsec_") and new != old and rotated.signing_secret_hint.endswith(new[-4:])
    assert rotated.updated_at >= endpoint.updated_at
    assert client.webhooks.retrieve(endpoint.id).signing_secret_hint == rotated.signing_secret_hint

    client.webhooks.test(endpoint.id, event_type="batch.completed")
    received = receiver.wait(count=1)[0]
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        client.webhooks.unwrap(received.body, received.headers, secret=secret)

    # Rotated again without keeping: only the newest secret verifies, at once.
    newest = client.webhooks.rotate_secret(endpoint.id).signing_secret
    client.webhooks.test(endpoint.id, event_type="batch.completed")
    received = receiver.wait(count=2)[1]
    assert len(received.headers["webhook-signature"].split(" ")) == 1
    client.webhooks.unwrap(received.body, received.headers, secret=newest)
    for secret in (old, new):
        with pytest.raises(InvalidWebhookSignatureError):
            client.webhooks.unwrap(received.body, received.headers, secret=secret)


def test_a_deleted_endpoint_gets_nothing_more(client, make_endpoint, receiver, task_cluster):
    endpoint = make_endpoint(receiver.url, ["batch.cancelled"])
    client.webhooks.delete(endpoint.id)
    batch = create_batch(client, model=UNSERVED)
    client.batches.cancel(batch.id)
    wait_for_status(client, batch.id, {"cancelled"}, timeout=60)
    kept = make_endpoint(receiver.url, ["batch.cancelled"])  # a later batch's event still arrives: proof of timing
    later = create_batch(client, model=UNSERVED)
    client.batches.cancel(later.id)
    receiver.for_batch(later.id)
    assert [r.event["data"]["id"] for r in receiver.received] == [later.id]
    client.webhooks.unwrap(receiver.received[0].body, receiver.received[0].headers, secret=kept.signing_secret)


def test_metrics_count_deliveries(server, client, make_endpoint, receiver, task_cluster):
    make_endpoint(receiver.url, ["batch.cancelled"])
    batch = create_batch(client, model=UNSERVED)
    client.batches.cancel(batch.id)
    receiver.for_batch(batch.id)
    text = httpx.get(f"{server}/metrics").text
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("batchserver_webhook")
    }
    assert values['batchserver_webhook_deliveries{status="succeeded"}'] >= 1
    assert values['batchserver_webhook_endpoints{state="enabled"}'] >= 1
    assert 'batchserver_webhook_deliveries{status="failed"}' in values
    assert values["batchserver_webhook_delivery_seconds_count"] >= 1
    assert values['batchserver_webhook_response_seconds_bucket{le="+Inf"}'] >= 1
    assert "batchserver_webhook_oldest_undelivered_seconds" in values
    assert json.loads(receiver.received[0].body)["type"] == "batch.cancelled"
