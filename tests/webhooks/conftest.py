"""Fixtures of the webhook tests: a receiver per test, and endpoints that are deleted when the test ends (alice's
project is shared by the whole suite: an endpoint left behind would get every later test's batch events)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from tests.helpers import jsonl, request_line
from tests.webhooks.receiver import Receiver

ALL_EVENTS = ["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def make_endpoint(client):
    """Create an endpoint with the SDK (alice's key); every one is deleted at the end of the test."""
    created = []

    def make(url: str, event_types: list[str] = ALL_EVENTS, name: str = "ci receiver", sdk=None):
        endpoint = (sdk or client).webhooks.create(url=url, name=name, event_types=event_types)
        created.append((sdk or client, endpoint.id))
        return endpoint

    yield make
    for sdk, endpoint_id in created:
        try:
            sdk.webhooks.delete(endpoint_id)
        except Exception:
            pass


def create_batch(client, model: str = "fake-echo", lines: list | None = None, custom: bytes | None = None):
    """A batch of two small chat requests (or of the given lines, or raw bytes) through the SDK."""
    data = custom if custom is not None else jsonl(lines or [request_line(f"r{i}", model=model) for i in range(2)])
    file = client.files.create(file=("hooks.jsonl", io.BytesIO(data)), purpose="batch")
    return client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
