"""The webhook console in a real browser (Debian's headless Chromium driven by Playwright, as in
tests/admin/test_browser.py, whose fixtures this module shares): the delivery log shows each delivery's event,
attempts, last status code, next retry and latency; "redeliver" sends a failed one again with the same
webhook-id; the endpoints page says which endpoint is disabled and never shows a secret. Screenshots go to
test-artifacts/."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.admin.test_browser import PASSWORD, USERNAME, browser, console, operator, page, shot  # noqa: F401
from tests.conftest import wait_for, wait_for_status
from tests.webhooks.conftest import create_batch
from tests.webhooks.receiver import Receiver


@pytest.fixture(scope="module")
def log(client, keys, django_db_blocker):
    """Deliveries to show, made before the browser starts (the ORM is not used once Playwright runs its loop): a
    test delivery that got a 500 (failed: tests are not retried), a cancelled batch's delivery (succeeded), and an
    endpoint disabled after failing for days."""
    receiver = Receiver(answers=[500])
    endpoint = client.webhooks.create(url=receiver.url, name="billing-hooks", event_types=["batch.cancelled"])
    broken = client.webhooks.create(url="http://127.0.0.1:9/gone", name="old-crm", event_types=["batch.completed"])
    assert client.webhooks.test(endpoint.id, event_type="batch.completed").status_code == 500
    batch = create_batch(client, model="fake-echo-b")
    client.batches.cancel(batch.id)
    wait_for_status(client, batch.id, {"cancelled"}, timeout=60)
    with django_db_blocker.unblock():
        from django.utils import timezone

        from webhooks.models import WebhookDelivery, WebhookEndpoint

        deliveries = WebhookDelivery.objects.filter(endpoint_id=endpoint.id)
        wait_for(
            lambda: deliveries.filter(status__in=["succeeded", "failed"]).count() == 2,
            30,
            message="both deliveries recorded",
        )
        failed = deliveries.get(status="failed")
        succeeded = deliveries.get(status="succeeded")
        WebhookEndpoint.objects.filter(pk=broken.id).update(
            disabled_at=timezone.now(),
            failing_since=timezone.now() - timedelta(days=3),
            disabled_reason="Every delivery failed for 3 days (the last: could not connect).",
        )
    yield {
        "receiver": receiver,
        "endpoint": endpoint,
        "broken": broken,
        "failed": failed.id,
        "succeeded": succeeded.id,
        "batch": batch.id,
    }
    for created in (endpoint, broken):
        client.webhooks.delete(created.id)
    receiver.close()


def row(page, delivery_id: str):
    return page.locator(f"#result_list tr:has(.field-webhook_id span[title='{delivery_id}'])")


def test_delivery_log_shows_attempts_status_codes_and_latency(log, page):
    page.goto("/admin/webhooks/webhookdelivery/")
    if "/admin/login/" in page.url:
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/webhooks/webhookdelivery/")
    assert "old-crm" in page.locator(".messagelist").inner_text()  # the console says it is disabled
    failed = row(page, log["failed"])
    assert failed.locator(".bs-delivery-failed").count() == 1
    assert failed.locator("td.field-event_type").inner_text().strip() == "batch.completed (test)"
    assert failed.locator("td.field-attempts").inner_text().strip() == "1"
    assert failed.locator("td.field-status_code").inner_text().strip() == "500"
    assert failed.locator("td.field-latency").inner_text().strip().endswith(" ms")
    assert failed.locator("td.field-next_retry").inner_text().strip() == "—"
    succeeded = row(page, log["succeeded"])
    assert succeeded.locator(".bs-delivery-succeeded").count() == 1
    assert succeeded.locator("td.field-event_type").inner_text().strip() == "batch.cancelled"
    assert succeeded.locator("td.field-batch a").inner_text().startswith(log["batch"][:14])
    assert succeeded.locator("td.field-status_code").inner_text().strip() == "200"
    shot(page, "admin-webhook-deliveries.png")


def test_redeliver_sends_the_same_webhook_id_again(log, page):
    page.goto("/admin/webhooks/webhookdelivery/")
    row(page, log["failed"]).locator("input.action-select").check()
    page.select_option("select[name=action]", "redeliver")
    with page.expect_navigation():
        page.click("button[name=index]")
    assert "Queued 1 redelivery" in page.locator(".messagelist").inner_text()
    receiver = log["receiver"]
    again = receiver.wait(lambda r: r.webhook_id == log["failed"], count=2, timeout=30)
    assert again[0].body == again[1].body and again[1].answered == 200

    def shows_succeeded():
        page.goto("/admin/webhooks/webhookdelivery/")
        redelivered = row(page, log["failed"])
        return (
            redelivered.locator(".bs-delivery-succeeded").count() == 1
            and redelivered.locator("td.field-attempts").inner_text().strip() == "2"
        )

    wait_for(shows_succeeded, 20, 0.5, "the log to show the redelivery")
    row(page, log["failed"]).locator(".field-webhook_id a").click()
    page.wait_for_selector("pre.bs-payload")
    assert '"object": "event"' in page.locator("pre.bs-payload").first.inner_text()
    shot(page, "admin-webhook-delivery.png")


def test_endpoints_page_says_which_is_disabled_and_shows_no_secret(log, page):
    page.goto("/admin/webhooks/webhookendpoint/")
    broken = page.locator("#result_list tr:has(a:text-is('old-crm'))")
    assert broken.locator(".bs-endpoint-disabled").count() == 1
    assert "disabled" in page.locator(".messagelist").inner_text()
    page.click("a:text-is('billing-hooks')")
    page.wait_for_selector("div.field-recent_deliveries")
    content = page.content()
    endpoint = log["endpoint"]
    assert endpoint.signing_secret_hint in content
    assert endpoint.signing_secret not in content and endpoint.signing_secret[6:20] not in content
    shot(page, "admin-webhook-endpoint.png")
