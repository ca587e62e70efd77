"""webhooks.services and webhooks.transport on the real PostgreSQL, with a real receiver: the claim that makes a
duplicate send do nothing, retries and their backoff, giving up, disabling an endpoint that keeps failing, the
secrets at rest, the address and scheme checks without BATCHSERVER_WEBHOOK_ALLOW_PRIVATE, redirects, the cap on
the answer, the timeout, redelivery and pruning.

Deliveries here are built due and marked as just queued, so that neither the suite's task cluster nor its sweep
touches them: each test plays the sender itself."""

from __future__ import annotations

import subprocess
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from openai import OpenAI
from standardwebhooks import Webhook

from batchserver.errors import Conflict
from tests.helpers import make_batch
from tests.stack import wait_for
from tests.webhooks.receiver import Answer, Receiver


@pytest.fixture
def project(db_access):
    from batchserver.models import Project

    return Project.objects.create(name=f"hooks-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def endpoint(project, receiver):
    from webhooks import services

    endpoint, secret = services.endpoint_create(
        project=project, url=receiver.url, name="svc", event_types=["batch.completed", "batch.cancelled"]
    )
    endpoint.plain_secret = secret
    return endpoint


def due_delivery(endpoint, *, batch_id: str = "batch_0123", **fields):
    """A delivery that is due now and counts as just queued (the sweep leaves it alone for a minute)."""
    from webhooks import services
    from webhooks.models import WebhookDelivery

    now = timezone.now()
    event = services._event_create(event_type="batch.completed", batch_id=batch_id, created_at=now)
    return WebhookDelivery.objects.create(
        endpoint=endpoint, event=event, **{"next_attempt_at": now, "enqueued_at": now, **fields}
    )


def send(delivery):
    from webhooks import services
    from webhooks.models import WebhookDelivery

    services.delivery_send(delivery_id=delivery.id)
    return WebhookDelivery.objects.select_related("endpoint").get(pk=delivery.id)


# ------------------------------------------------------------------------------------------------ claim
def test_two_senders_of_one_delivery_send_it_once(endpoint, receiver):
    from webhooks import services

    delivery = due_delivery(endpoint)
    results = []

    def sender():
        try:
            results.append(services.delivery_send(delivery_id=delivery.id))
        finally:
            connection.close()

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result is not None for result in results) == 1
    assert len(receiver.received) == 1
    assert services.delivery_send(delivery_id=delivery.id) is None  # delivered: a late task does nothing
    assert len(receiver.received) == 1
    received = receiver.received[0]
    # The reference verifier of Standard Webhooks agrees with the SDK's.
    assert Webhook(endpoint.plain_secret).verify(received.body, received.headers) == received.event


# ------------------------------------------------------------------------------------------------ retries
def test_failures_are_retried_with_backoff_and_the_same_webhook_id(endpoint, receiver, settings):
    settings.BATCHSERVER_WEBHOOK_RETRY_SECONDS = [60, 600]
    receiver.answer(500, Answer(status=503, body=b"busy"))
    delivery = due_delivery(endpoint)
    started = timezone.now()
    row = send(delivery)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 500)
    assert started + timedelta(seconds=59) < row.next_attempt_at < timezone.now() + timedelta(seconds=61)
    assert row.endpoint.failing_since is not None and row.endpoint.disabled_at is None

    type(row).objects.filter(pk=row.pk).update(next_attempt_at=timezone.now(), enqueued_at=timezone.now())
    row = send(delivery)
    assert (row.status, row.attempts, row.last_status_code, row.last_response) == ("pending", 2, 503, "busy")
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=590)

    type(row).objects.filter(pk=row.pk).update(next_attempt_at=timezone.now(), enqueued_at=timezone.now())
    row = send(delivery)
    assert (row.status, row.attempts, row.last_status_code, row.next_attempt_at) == ("succeeded", 3, 200, None)
    assert row.delivered_at is not None and row.last_latency is not None
    assert row.endpoint.failing_since is None
    assert [r.answered for r in receiver.received] == [500, 503, 200]
    assert {r.webhook_id for r in receiver.received} == {delivery.id}
    assert len({r.body for r in receiver.received}) == 1
    for received in receiver.received:
        OpenAI(api_key="unused").webhooks.unwrap(received.body, received.headers, secret=endpoint.plain_secret)


def test_retries_stop_72_hours_after_the_event(endpoint, receiver):
    receiver.answer(500)
    delivery = due_delivery(endpoint, created_at=timezone.now() - timedelta(hours=72))
    row = send(delivery)
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 1, None)


def test_an_endpoint_failing_for_days_is_disabled_and_gets_no_more_events(endpoint, receiver, project, settings):
    from webhooks import services
    from webhooks.models import WebhookDelivery, WebhookEndpoint

    settings.BATCHSERVER_WEBHOOK_DISABLE_AFTER_DAYS = 2
    receiver.answer(500, 500)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(days=1))
    row = send(due_delivery(endpoint))
    assert row.endpoint.disabled_at is None  # failing for one day only

    waiting = due_delivery(endpoint, next_attempt_at=timezone.now() + timedelta(hours=1))
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(days=2, seconds=1))
    row = send(due_delivery(endpoint))
    disabled = row.endpoint
    assert disabled.disabled_at is not None and "failed for 2 days" in disabled.disabled_reason
    assert "status 500" in disabled.disabled_reason and "enable" in disabled.disabled_reason
    waiting = WebhookDelivery.objects.get(pk=waiting.pk)
    assert (waiting.status, waiting.last_error) == ("failed", "not sent: the endpoint was disabled")

    batch = make_batch(project, status="completed", completed_at=timezone.now())
    assert services.events_record_batch(batch=batch, status="completed") is None
    with pytest.raises(Conflict, match="disabled: enable it again first"):
        services.delivery_redeliver(delivery=waiting)
    # A new URL is its owner's fix: enabled again.
    services.endpoint_update(endpoint=disabled, url=receiver.url + "/v2")
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).disabled_at is None


def test_redeliver_sends_again_with_the_same_webhook_id(endpoint, receiver, task_cluster):
    from webhooks import services

    delivery = send(due_delivery(endpoint))
    assert delivery.status == "succeeded"
    assert services.delivery_redeliver(delivery=delivery)
    assert not services.delivery_redeliver(delivery=delivery)  # already queued
    first, second = receiver.wait(count=2, timeout=30)
    assert first.webhook_id == second.webhook_id == delivery.id and first.body == second.body


def test_events_are_recorded_only_for_final_statuses_and_subscribed_endpoints(endpoint, project):
    from django.db import transaction

    from webhooks import services
    from webhooks.models import WebhookDelivery

    batch = make_batch(project, status="expired", expired_at=timezone.now())
    for status in ("validating", "in_progress", "finalizing", "cancelling"):
        assert services.events_record_batch(batch=batch, status=status) is None
    assert services.events_record_batch(batch=batch, status="expired") is None  # not subscribed
    with transaction.atomic():
        event = services.events_record_batch(batch=batch, status="cancelled")
        assert event.type == "batch.cancelled"
    assert WebhookDelivery.objects.filter(event=event, endpoint=endpoint).count() == 1


# ------------------------------------------------------------------------------------------------ secrets
def test_signing_secrets_are_encrypted_at_rest(endpoint, settings, stack_env):
    from webhooks import crypto, services
    from webhooks.models import WebhookEndpoint

    secret = endpoint.plain_secret
    row = WebhookEndpoint.objects.get(pk=endpoint.pk)
    dump = subprocess.run(
        ["pg_dump", "--data-only", "--table=webhooks_webhookendpoint", stack_env["DATABASE_URL"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert endpoint.id in dump and row.secret in dump
    assert secret not in dump and secret[6:] not in dump and secret[6:26] not in dump
    assert services.signing_secrets(row, timezone.now()) == [secret]

    # The same ciphertext on another row does not decrypt: it is bound to its endpoint.
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(row.secret, context="we_another")
    # Another SECRET_KEY reads nothing; the old one among SECRET_KEY_FALLBACKS still does.
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY = "a-new-secret-key-" + uuid.uuid4().hex
    with pytest.raises(crypto.SecretUnreadable, match="rotate the endpoint's secret"):
        services.signing_secrets(row, timezone.now())
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert services.signing_secrets(row, timezone.now()) == [secret]


def test_an_unreadable_secret_fails_the_attempt_and_says_why(endpoint, receiver, settings):
    settings.SECRET_KEY = "a-new-secret-key-" + uuid.uuid4().hex
    row = send(due_delivery(endpoint))
    assert row.status == "pending" and row.last_status_code is None
    assert "DJANGO_SECRET_KEY" in row.last_error and receiver.received == []


def test_a_kept_old_secret_stops_signing_after_24_hours(endpoint, receiver):
    from webhooks import services
    from webhooks.models import WebhookEndpoint

    stale = WebhookEndpoint.objects.get(pk=endpoint.pk)
    _, new = services.endpoint_rotate_secret(endpoint=endpoint, keep_old_secret_active_for_24_hours=True)
    row = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert services.signing_secrets(row, timezone.now()) == [new, endpoint.plain_secret]
    assert services.signing_secrets(row, timezone.now() + timedelta(hours=24, seconds=1)) == [new]
    with pytest.raises(Conflict, match="rotated by another request"):
        services.endpoint_rotate_secret(endpoint=stale)  # read before the rotation: it lost the race


# ------------------------------------------------------------------------------------------------ transport
def test_private_addresses_and_plain_http_are_refused_when_sending_without_the_setting(receiver, settings):
    from webhooks import transport

    settings.BATCHSERVER_WEBHOOK_ALLOW_PRIVATE = False
    port = receiver.url.split(":")[2].split("/")[0]
    for url, says in [
        (receiver.url, "not an HTTPS URL"),
        (f"https://127.0.0.1:{port}/", "127.0.0.1 is not a public address"),
        (f"https://127.1:{port}/", "'127.1' resolves to 127.0.0.1, not a public address"),
        (f"https://[::ffff:127.0.0.1]:{port}/", "not a public address"),
        (f"https://no-such-host.invalid:{port}/", "does not resolve"),
        (f"https://user:pw@example.com:{port}/", "cannot hold credentials"),
    ]:
        outcome = transport.post(url, b"{}", {}, timeout=2)
        assert outcome.status_code is None and outcome.error.startswith("refused: ") and says in outcome.error, url
    assert receiver.received == []
    settings.BATCHSERVER_WEBHOOK_ALLOW_PRIVATE = True
    assert transport.post(receiver.url, b"{}", {}, timeout=2).status_code == 200


def certificate_for(name: str):
    """A CA, and a certificate for `name` that it signed (PEM files in a temporary folder)."""
    import datetime
    import tempfile
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def issue(subject: str, key, issuer_name, issuer_key, *, ca: bool):
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook tests CA")])
    ca = issue("webhook tests CA", ca_key, ca_name, ca_key, ca=True)
    leaf = issue(name, leaf_key, ca_name, ca_key, ca=False)
    folder = Path(tempfile.mkdtemp())
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.pem").write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return folder / "ca.pem", folder / "leaf.pem"


def test_https_is_verified_against_the_urls_host_name_though_the_address_is_pinned(settings, monkeypatch):
    import ssl

    from webhooks import transport

    ca, leaf = certificate_for("localhost")
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(leaf)
    trusting = ssl.create_default_context(cafile=str(ca))
    monkeypatch.setattr(transport, "tls_context", lambda: trusting)  # the test CA instead of the public ones
    settings.BATCHSERVER_WEBHOOK_ALLOW_PRIVATE = True
    receiver = Receiver(tls=served, host="localhost")
    try:
        outcome = transport.post(receiver.url, b"{}", {}, timeout=5)
        assert outcome.ok, outcome.error
        assert receiver.received[0].headers["host"] == receiver.url.split("/")[2]
        # The same server by address: its certificate names localhost, not 127.0.0.1.
        by_address = transport.post(receiver.url.replace("localhost", "127.0.0.1"), b"{}", {}, timeout=5)
        assert by_address.status_code is None and "CERTIFICATE_VERIFY_FAILED" in by_address.error
        monkeypatch.undo()  # the public CAs do not know the test CA
        unknown = transport.post(receiver.url, b"{}", {}, timeout=5)
        assert unknown.status_code is None and "CERTIFICATE_VERIFY_FAILED" in unknown.error
        assert len(receiver.received) == 1
    finally:
        receiver.close()


def test_redirects_are_not_followed(receiver, settings):
    from webhooks import transport

    target = Receiver()
    try:
        receiver.answer(Answer(status=307, headers={"Location": target.url}))
        outcome = transport.post(receiver.url, b"{}", {}, timeout=2)
        assert outcome.status_code == 307 and not outcome.ok
        wait_for(lambda: len(receiver.received) == 1, 5, message="the receiver to record the request")
        assert target.received == []
    finally:
        target.close()


def test_only_the_start_of_the_answer_is_read(receiver):
    from webhooks import transport

    receiver.answer(Answer(body=b"x" * 2_000_000))
    outcome = transport.post(receiver.url, b"{}", {}, timeout=5)
    assert outcome.ok and len(outcome.response) == transport.RESPONSE_CAP


def test_a_slow_receiver_times_out(receiver):
    from webhooks import transport

    receiver.answer(Answer(delay=3))
    outcome = transport.post(receiver.url, b"{}", {}, timeout=0.5)
    assert outcome.status_code is None and "timed out" in outcome.error and outcome.latency < 2


def test_a_receiver_that_is_down_is_a_failed_attempt(receiver):
    from webhooks import transport

    receiver.close()
    outcome = transport.post(receiver.url, b"{}", {}, timeout=2)
    assert outcome.status_code is None and "could not connect" in outcome.error


# ------------------------------------------------------------------------------------------------ log
def test_prune_deletes_old_finished_deliveries_and_their_events(endpoint):
    from webhooks import services
    from webhooks.models import WebhookDelivery, WebhookEvent

    now = timezone.now()
    old = due_delivery(endpoint, status="succeeded", next_attempt_at=None, created_at=now - timedelta(days=31))
    old_pending = due_delivery(endpoint, next_attempt_at=now + timedelta(days=1), created_at=now - timedelta(days=31))
    recent = due_delivery(endpoint, status="failed", next_attempt_at=None)
    WebhookEvent.objects.filter(pk=old.event_id).update(created_at=now - timedelta(days=31))
    assert services.prune(before=now - timedelta(days=30)) >= 1
    assert not WebhookDelivery.objects.filter(pk=old.pk).exists()
    assert not WebhookEvent.objects.filter(pk=old.event_id).exists()
    assert WebhookDelivery.objects.filter(pk__in=[old_pending.pk, recent.pk]).count() == 2


def test_a_bad_retry_schedule_stops_the_server_with_a_clear_error(tmp_path):
    from tests.stack import finished, settings_process

    for value in ("5,soon", "0,30", ""):
        proc = settings_process("import django; django.setup()", tmp_path, BATCHSERVER_WEBHOOK_RETRY_SECONDS=value)
        assert "must be comma-separated positive seconds" in finished(proc, ok=False), value
