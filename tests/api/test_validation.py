"""Every validation error code, each from a real file, with its line number."""

from __future__ import annotations

import json

import pytest

from tests.conftest import wait_for_status
from tests.helpers import request_line, upload_batch_file


def validate(client, lines, endpoint="/v1/chat/completions"):
    file = upload_batch_file(client, lines)
    batch = client.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window="24h")
    return wait_for_status(client, batch.id, {"failed", "in_progress"}, timeout=30)


CASES = {
    "invalid_json_line": ([request_line("a"), b'{"custom_id": "b", ', request_line("c")], 2),
    "missing_custom_id": ([request_line("a"), {k: v for k, v in request_line("b").items() if k != "custom_id"}], 2),
    "duplicate_custom_id": ([request_line("a"), request_line("b"), request_line("a")], 3),
    "url_mismatch": ([request_line("a"), request_line("b", url="/v1/completions")], 2),
    "model_mismatch": ([request_line("a"), request_line("b", model="SmolLM2-135M-Instruct")], 2),
    "model_not_found": ([request_line("a", model="gpt-7")], 1),
    "invalid_request": ([request_line("a"), request_line("b", method="GET")], 2),
}


@pytest.mark.parametrize("code", list(CASES))
def test_validation_error_codes(client, code, db_access):
    from batches_api.models import BatchRequest

    lines, line = CASES[code]
    batch = validate(client, lines)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors.object == "list"
    first = batch.errors.data[0]
    assert (first.code, first.line) == (code, line)
    assert first.message
    assert BatchRequest.objects.filter(batch_id=batch.id).count() == 0


def test_body_without_an_object_is_invalid_request(client):
    batch = validate(client, [{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": "hi"}])
    assert (batch.errors.data[0].code, batch.errors.data[0].line) == ("invalid_request", 1)


def test_empty_file(client):
    batch = validate(client, [])
    assert batch.errors.data[0].code == "empty_file"


def test_too_many_tasks(client):
    from django.conf import settings

    limit = settings.BATCHSERVER_MAX_BATCH_REQUESTS
    lines = [b'{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"fake-echo",'
             b'"messages":[]}}' % i for i in range(limit + 1)]
    batch = validate(client, lines)
    assert [(e.code, e.line) for e in batch.errors.data] == [("too_many_tasks", limit + 1)]


def test_every_error_is_reported_with_its_line(client):
    batch = validate(client, [request_line("a"), b"not json", request_line("a"), request_line("c", model="x")])
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("invalid_json_line", 2), ("duplicate_custom_id", 3), ("model_not_found", 4)]


def test_model_that_does_not_serve_the_endpoint(client):
    batch = validate(client, [request_line("a", model="all-MiniLM-L6-v2")])
    assert batch.errors.data[0].code == "invalid_request"
    assert "does not serve /v1/chat/completions" in batch.errors.data[0].message


def test_blank_lines_and_crlf_are_tolerated(client):
    data = [json.dumps(request_line("a")).encode() + b"\r", b"", json.dumps(request_line("b")).encode()]
    batch = validate(client, data)
    assert batch.status == "in_progress"
    assert batch.request_counts.total == 2
    client.batches.cancel(batch.id)


def test_embeddings_and_completions_files_validate(client):
    for endpoint in ("/v1/embeddings", "/v1/completions"):
        batch = validate(client, [request_line("a", url=endpoint), request_line("b", url=endpoint)], endpoint)
        assert batch.status == "in_progress", batch.errors
        client.batches.cancel(batch.id)

