"""/v1/webhook_endpoints and /v1/webhook_event_types through the official SDK (client.webhooks), over real HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.webhooks import (
    DeletedWebhookEndpoint,
    WebhookEndpoint,
    WebhookEndpointTestResult,
    WebhookEndpointWithSecret,
)

from tests.stack import start_web
from tests.webhooks.conftest import ALL_EVENTS


def test_create_returns_the_secret_once_and_retrieve_only_its_hint(client, make_endpoint, receiver):
    endpoint = make_endpoint(receiver.url, ["batch.completed", "batch.failed"], name="orders")
    assert isinstance(endpoint, WebhookEndpointWithSecret)
    assert endpoint.id.startswith("we_") and endpoint.object == "webhook_endpoint"
    assert endpoint.signing_secret.startswith("whsec_") and len(endpoint.signing_secret) == 38
    assert endpoint.signing_secret_hint.endswith(endpoint.signing_secret[-4:])
    assert endpoint.signing_secret[6:-4] not in endpoint.signing_secret_hint
    assert endpoint.url == receiver.url and endpoint.name == "orders"
    assert endpoint.event_types == ["batch.completed", "batch.failed"]
    assert endpoint.created_at == endpoint.updated_at > 0

    fetched = client.webhooks.retrieve(endpoint.id)
    assert isinstance(fetched, WebhookEndpoint)
    assert "signing_secret" not in fetched.model_dump()
    assert fetched.model_dump() == {
        key: value for key, value in endpoint.model_dump().items() if key != "signing_secret"
    }


def test_list_pages_newest_first(client, make_endpoint, receiver, http):
    ids = [make_endpoint(receiver.url, name=f"page-{i}").id for i in range(3)]
    listed = [endpoint.id for endpoint in client.webhooks.list(limit=2) if endpoint.id in ids]
    assert listed == ids[::-1]
    first = client.webhooks.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    ascending = http.get("/v1/webhook_endpoints", params={"order": "asc", "limit": 100}).json()
    assert [item["id"] for item in ascending["data"] if item["id"] in ids] == ids
    assert http.get("/v1/webhook_endpoints", params={"limit": 0}).status_code == 400
    bad = http.get("/v1/webhook_endpoints", params={"after": "we_nope"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"


def test_update_changes_what_is_given_and_updated_at_only_when_something_changes(
    client, make_endpoint, receiver, db_access
):
    from webhooks.models import WebhookEndpoint as Row

    endpoint = make_endpoint(receiver.url, ["batch.completed"], name="before")
    stamp = Row.objects.get(pk=endpoint.id).updated_at
    same = client.webhooks.update(endpoint.id, name="before", event_types=["batch.completed"])
    assert Row.objects.get(pk=endpoint.id).updated_at == stamp and same.updated_at == endpoint.updated_at
    changed = client.webhooks.update(endpoint.id, name="after", event_types=["batch.cancelled", "batch.expired"])
    assert changed.name == "after" and changed.url == receiver.url
    assert changed.event_types == ["batch.cancelled", "batch.expired"]
    assert Row.objects.get(pk=endpoint.id).updated_at > stamp
    assert client.webhooks.retrieve(endpoint.id).name == "after"


def test_delete_then_404(client, make_endpoint, receiver):
    endpoint = make_endpoint(receiver.url)
    deleted = client.webhooks.delete(endpoint.id)
    assert isinstance(deleted, DeletedWebhookEndpoint)
    assert deleted.model_dump() == {"id": endpoint.id, "object": "webhook_endpoint.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.webhooks.retrieve(endpoint.id)


def test_event_types_are_the_batch_events(client):
    listed = client.webhooks.event_types.list()
    assert listed.object == "list" and listed.data == ALL_EVENTS


def test_test_sends_a_signed_sample_and_returns_the_receivers_status_code(client, make_endpoint, receiver):
    endpoint = make_endpoint(receiver.url, ["batch.completed"])
    receiver.answer(418)
    result = client.webhooks.test(endpoint.id, event_type="batch.expired")
    assert isinstance(result, WebhookEndpointTestResult)
    assert result.model_dump() == {
        "event_type": "batch.expired",
        "object": "webhook_endpoint.test",
        "status_code": 418,
        "success": True,
        "webhook_endpoint_id": endpoint.id,
    }
    sample = receiver.wait()[0]
    event = client.webhooks.unwrap(sample.body, sample.headers, secret=endpoint.signing_secret)
    assert event.type == "batch.expired" and event.object == "event" and event.data.id.startswith("batch_")
    assert client.webhooks.test(endpoint.id, event_type="batch.completed").status_code == 200


def test_test_of_a_receiver_that_is_down_says_so(client, make_endpoint, receiver):
    endpoint = make_endpoint(receiver.url)
    receiver.close()
    with pytest.raises(openai.BadRequestError) as caught:
        client.webhooks.test(endpoint.id, event_type="batch.completed")
    error = caught.value.body
    assert error["code"] == "webhook_delivery_failed" and receiver.url in error["message"]
    assert "could not connect" in error["message"] and "test again" in error["message"]


def test_another_projects_key_gets_404(client, other_client, make_endpoint, receiver):
    endpoint = make_endpoint(receiver.url)
    calls = [
        lambda: other_client.webhooks.retrieve(endpoint.id),
        lambda: other_client.webhooks.update(endpoint.id, name="mine now"),
        lambda: other_client.webhooks.rotate_secret(endpoint.id),
        lambda: other_client.webhooks.test(endpoint.id, event_type="batch.completed"),
        lambda: other_client.webhooks.delete(endpoint.id),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.body["message"] == f"No such webhook endpoint: '{endpoint.id}'"
    assert endpoint.id not in [e.id for e in other_client.webhooks.list(limit=100)]
    assert client.webhooks.retrieve(endpoint.id).name == "ci receiver"  # untouched
    assert receiver.received == []


@pytest.mark.parametrize(
    "body, param, says",
    [
        (
            {"url": "https://example.com/h", "name": "x", "event_types": ["response.completed"]},
            "event_types",
            "batch.completed, batch.failed, batch.expired, batch.cancelled",
        ),
        ({"url": "https://example.com/h", "name": "x", "event_types": []}, "event_types", "at least one"),
        ({"url": "https://example.com/h", "name": "x", "event_types": "batch.completed"}, "event_types", "list"),
        ({"name": "x", "event_types": ["batch.completed"]}, "url", "required"),
        ({"url": "ftp://example.com/h", "name": "x", "event_types": ["batch.completed"]}, "url", "HTTPS"),
        ({"url": "https://", "name": "x", "event_types": ["batch.completed"]}, "url", "HTTPS"),
        ({"url": "https://example.com:99999/", "name": "x", "event_types": ["batch.completed"]}, "url", "valid URL"),
        ({"url": "https://example.com/h", "event_types": ["batch.completed"]}, "name", "required"),
        ({"url": "https://example.com/h", "name": "x" * 300, "event_types": ["batch.completed"]}, "name", "256"),
        ({"url": ["https://example.com/h"], "name": "x", "event_types": ["batch.completed"]}, "url", "string"),
    ],
)
def test_bad_create_bodies_are_400s_that_say_what_to_send(http, body, param, says):
    response = http.post("/v1/webhook_endpoints", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"] and error["type"] == "invalid_request_error"


def test_bad_bodies_of_the_other_actions(http, make_endpoint, receiver):
    endpoint = make_endpoint(receiver.url)
    for path, body, param in [
        (f"/v1/webhook_endpoints/{endpoint.id}/test", {"event_type": "eval.run.failed"}, "event_type"),
        (f"/v1/webhook_endpoints/{endpoint.id}/test", {}, "event_type"),
        (f"/v1/webhook_endpoints/{endpoint.id}", {"event_types": ["batch.done"]}, "event_types"),
        (f"/v1/webhook_endpoints/{endpoint.id}", {"name": None}, "name"),
        (
            f"/v1/webhook_endpoints/{endpoint.id}/rotate_secret",
            {"keep_old_secret_active_for_24_hours": "maybe"},
            "keep_old_secret_active_for_24_hours",
        ),
    ]:
        response = http.post(path, json=body)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["param"] == param
    for raw in (b"[1, 2]", b"{not json"):
        response = http.post("/v1/webhook_endpoints", content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and "error" in response.json()
    assert http.put(f"/v1/webhook_endpoints/{endpoint.id}", json={}).status_code == 405
    assert receiver.received == []


def test_endpoints_are_in_the_openapi_schema(server):
    schema = httpx.get(f"{server}/v1/openapi.json").json()
    paths = schema["paths"]
    assert set(paths["/v1/webhook_endpoints"]) >= {"get", "post"}
    assert set(paths["/v1/webhook_endpoints/{id}"]) >= {"get", "post", "delete"}
    assert "post" in paths["/v1/webhook_endpoints/{id}/rotate_secret"]
    assert "post" in paths["/v1/webhook_endpoints/{id}/test"]
    assert "get" in paths["/v1/webhook_event_types"]
    components = schema["components"]["schemas"]
    sdk_fields = {
        "WebhookEndpoint": WebhookEndpoint,
        "WebhookEndpointWithSecret": WebhookEndpointWithSecret,
        "DeletedWebhookEndpoint": DeletedWebhookEndpoint,
        "WebhookEndpointTestResult": WebhookEndpointTestResult,
    }
    for name, model in sdk_fields.items():
        assert set(components[name]["properties"]) == set(model.model_fields), name


@pytest.fixture(scope="module")
def strict_server(stack_env):
    """A web server as deployed: without BATCHSERVER_WEBHOOK_ALLOW_PRIVATE."""
    proc, url = start_web("webhooks-strict", {**stack_env, "BATCHSERVER_WEBHOOK_ALLOW_PRIVATE": "false"})
    yield url
    proc.stop()


def test_private_and_plain_http_urls_are_refused_without_the_setting(strict_server, keys, receiver):
    sdk = openai.OpenAI(base_url=f"{strict_server}/v1", api_key=keys["alice"], max_retries=0)
    for url, says in [
        (receiver.url, "not an HTTPS URL"),
        ("https://127.0.0.1/h", "not a public address"),
        ("https://10.1.2.3/h", "not a public address"),
        ("https://[::1]:8443/h", "not a public address"),
        ("https://169.254.169.254/latest", "not a public address"),
        ("https://[::ffff:127.0.0.1]/h", "not a public address"),
        ("https://localhost/h", "this server"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.webhooks.create(url=url, name="sneaky", event_types=["batch.completed"])
        assert caught.value.body["param"] == "url" and says in caught.value.body["message"], url
    # A host that is no IP literal but resolves to loopback (inet_aton's short form) passes the URL check; the
    # resolved addresses are checked when sending.
    port = receiver.url.split(":")[2].split("/")[0]
    endpoint = sdk.webhooks.create(url=f"https://127.1:{port}/h", name="sneaky", event_types=["batch.completed"])
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.webhooks.test(endpoint.id, event_type="batch.completed")
        assert "'127.1' resolves to 127.0.0.1, not a public address" in caught.value.body["message"]
    finally:
        sdk.webhooks.delete(endpoint.id)
    assert receiver.received == []
