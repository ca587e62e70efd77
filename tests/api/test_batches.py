"""/v1/batches and /v1/models through the official SDK. No worker serves fake-echo here, so batches stay
in_progress after validation: this is the API and the task cluster alone."""

from __future__ import annotations

import time

import openai
import pytest
from openai.types import Batch, Model

from tests.conftest import wait_for_status
from tests.helpers import request_line, upload_batch_file


def create_batch(client, n: int = 2, **kwargs) -> Batch:
    file = upload_batch_file(client, [request_line(f"req-{i}") for i in range(n)])
    return client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h", **kwargs
    )


def test_create_returns_a_complete_validating_batch(client):
    before = int(time.time())
    file = upload_batch_file(client, [request_line("a"), request_line("b")])
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"job": "nightly"}
    )
    assert isinstance(batch, Batch)
    assert batch.id.startswith("batch_")
    assert batch.object == "batch"
    assert batch.status == "validating"
    assert batch.input_file_id == file.id
    assert batch.endpoint == "/v1/chat/completions"
    assert batch.completion_window == "24h"
    assert batch.metadata == {"job": "nightly"}
    assert before <= batch.created_at <= int(time.time())
    assert batch.expires_at == batch.created_at + 24 * 3600
    assert batch.errors is None and batch.output_file_id is None and batch.error_file_id is None
    for stamp in (
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
    ):
        assert getattr(batch, stamp) is None
    assert batch.request_counts.model_dump() == {"total": 0, "completed": 0, "failed": 0}
    assert batch.usage.model_dump() == {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    # Every field of the SDK's Batch is sent, none unknown to it.
    assert set(batch.model_dump()) == set(Batch.model_fields)
    assert not batch.model_extra


def test_validation_moves_a_good_file_to_in_progress_with_its_requests(client, db_access):
    from batches_api.models import BatchRequest

    batch = create_batch(client, n=3)
    batch = wait_for_status(client, batch.id, {"in_progress"}, timeout=30)
    assert batch.model == "fake-echo"
    assert batch.in_progress_at >= batch.created_at
    assert batch.request_counts.total == 3
    rows = list(
        BatchRequest.objects.filter(batch_id=batch.id).order_by("line").values_list("line", "custom_id", "status")
    )
    assert rows == [(1, "req-0", "pending"), (2, "req-1", "pending"), (3, "req-2", "pending")]


def test_retrieve_and_list_newest_first_across_pages(client):
    ids = [create_batch(client, n=1).id for _ in range(4)]
    assert client.batches.retrieve(ids[0]).id == ids[0]
    page = client.batches.list(limit=3)
    assert [b.id for b in page.data] == ids[::-1][:3]
    assert page.has_more is True
    assert page.first_id == ids[-1] and page.last_id == ids[-3]
    second = client.batches.list(limit=3, after=page.last_id)
    assert second.data[0].id == ids[0]
    walked = [b.id for b in client.batches.list(limit=2)]
    assert walked[:4] == ids[::-1]
    assert len(walked) == len(set(walked))


def test_cancel_in_progress_batch_without_a_worker(client, db_access):
    from batches_api.models import BatchRequest

    batch = wait_for_status(client, create_batch(client, n=3).id, {"in_progress"}, timeout=30)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    assert cancelling.cancelling_at is not None
    cancelled = wait_for_status(client, batch.id, {"cancelled"}, timeout=30)
    assert cancelled.cancelled_at >= cancelled.cancelling_at
    assert cancelled.output_file_id is None  # nothing ran
    assert cancelled.request_counts.model_dump() == {"total": 3, "completed": 0, "failed": 3}
    lines = client.files.content(cancelled.error_file_id).read().decode().splitlines()
    assert [line.count("batch_cancelled") for line in lines] == [1, 1, 1]
    assert BatchRequest.objects.filter(batch_id=batch.id, status="errored").count() == 3


def test_cancel_twice_is_idempotent_and_cancel_of_a_finished_batch_is_refused(client):
    batch = wait_for_status(client, create_batch(client).id, {"in_progress"}, timeout=30)
    client.batches.cancel(batch.id)
    again = client.batches.cancel(batch.id)
    assert again.status in ("cancelling", "cancelled")
    wait_for_status(client, batch.id, {"cancelled"}, timeout=30)
    with pytest.raises(openai.ConflictError) as raised:
        client.batches.cancel(batch.id)
    assert raised.value.body["message"] == "Cannot cancel a batch with status 'cancelled'."


def test_models_list_and_retrieve(client):
    from django.conf import settings

    models = client.models.list()
    assert [m.id for m in models] == list(settings.BATCHSERVER_MODELS)
    model = client.models.retrieve("fake-echo")
    assert isinstance(model, Model)
    assert (model.id, model.object, model.owned_by) == ("fake-echo", "model", "batchserver")
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("gpt-7")
    assert raised.value.code == "model_not_found"


def test_output_expires_after_is_accepted_and_checked(client):
    batch = create_batch(client, output_expires_after={"anchor": "created_at", "seconds": 7200})
    assert batch.status == "validating"
    with pytest.raises(openai.BadRequestError) as raised:
        create_batch(client, output_expires_after={"anchor": "created_at", "seconds": 10})
    assert raised.value.param == "output_expires_after.seconds"
