"""Small builders for test input files."""

from __future__ import annotations

import io
import json
import tempfile
from datetime import timedelta


def request_line(
    custom_id: str,
    *,
    model: str = "fake-echo",
    url: str = "/v1/chat/completions",
    body: dict | None = None,
    **overrides,
) -> dict:
    if body is None:
        body = {
            "/v1/embeddings": {"model": model, "input": f"text {custom_id}"},
            "/v1/completions": {"model": model, "prompt": f"say {custom_id}", "max_tokens": 8},
            "/v1/score": {"model": model, "queries": f"text {custom_id}", "documents": ["one text", "another"]},
            "/v1/rerank": {"model": model, "query": f"text {custom_id}", "documents": ["one text", "another"]},
        }.get(url, {"model": model, "messages": [{"role": "user", "content": f"say {custom_id}"}], "max_tokens": 8})
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body, **overrides}


def jsonl(lines: list) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def upload_batch_file(client, lines: list, filename: str = "input.jsonl"):
    return client.files.create(file=(filename, io.BytesIO(jsonl(lines))), purpose="batch")


def parse_jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


# Rows written straight to the test database (for admin and service tests).
def write_file(project, data: bytes, *, purpose: str = "batch", filename: str = "input.jsonl"):
    from files_api.services import file_create_from_local

    with tempfile.NamedTemporaryFile(suffix=".jsonl") as tmp:
        tmp.write(data)
        tmp.flush()
        return file_create_from_local(project=project, path=tmp.name, purpose=purpose, filename=filename)


def request_json(custom_id: str, model: str = "fake-echo", max_tokens: int = 4) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": custom_id}]},
    }


def make_batch(
    project,
    *,
    status: str = "in_progress",
    model: str = "fake-echo",
    total: int = 0,
    completed: int = 0,
    failed: int = 0,
    errored: int = 0,
    input_file=None,
    with_requests: bool = False,
    **fields,
):
    """A batch in any state. with_requests: a real input file and one BatchRequest per line, in this order:
    `completed` with a 200, `failed` with a 400, `errored` never run (error file), the rest pending."""
    from django.utils import timezone

    from batches_api.models import Batch, BatchRequest

    now = timezone.now()
    lines = []
    if with_requests:
        lines = [json.dumps(request_json(f"r{i}", model)).encode() for i in range(total)]
        input_file = write_file(project, b"".join(line + b"\n" for line in lines))
    if input_file is None:
        input_file = write_file(project, json.dumps(request_json("only", model)).encode() + b"\n")
    defaults = dict(
        project=project,
        endpoint="/v1/chat/completions",
        model=model,
        status=status,
        input_file=input_file,
        total_requests=total,
        completed_requests=completed,
        failed_requests=failed + errored,
        created_at=now - timedelta(minutes=10),
        expires_at=now + timedelta(hours=23),
    )
    if status != "validating":
        defaults["in_progress_at"] = now - timedelta(minutes=9)
    defaults.update(fields)
    batch = Batch.objects.create(**defaults)
    if with_requests:
        rows, offset = [], 0
        for i, line in enumerate(lines):
            row = BatchRequest(batch=batch, line=i + 1, custom_id=f"r{i}", offset=offset, length=len(line))
            offset += len(line) + 1
            if i < completed:
                row.status, row.status_code, row.output_tokens = "responded", 200, 10
                row.finished_at = now - timedelta(minutes=1)
            elif i < completed + failed:
                row.status, row.status_code = "responded", 400
                row.finished_at = now - timedelta(minutes=1)
            elif i < completed + failed + errored:
                row.status, row.error_code = "errored", "batch_cancelled"
                row.finished_at = now - timedelta(minutes=1)
            rows.append(row)
        BatchRequest.objects.bulk_create(rows)
    return batch
