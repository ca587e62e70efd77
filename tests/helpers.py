"""Small builders for test input files."""

from __future__ import annotations

import io
import json


def request_line(custom_id: str, *, model: str = "fake-echo", url: str = "/v1/chat/completions",
                 body: dict | None = None, **overrides) -> dict:
    if body is None:
        body = ({"model": model, "input": f"text {custom_id}"} if url == "/v1/embeddings" else
                {"model": model, "prompt": f"say {custom_id}", "max_tokens": 8} if url == "/v1/completions" else
                {"model": model, "messages": [{"role": "user", "content": f"say {custom_id}"}], "max_tokens": 8})
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body, **overrides}


def jsonl(lines: list) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def upload_batch_file(client, lines: list, filename: str = "input.jsonl"):
    return client.files.create(file=(filename, io.BytesIO(jsonl(lines))), purpose="batch")


def parse_jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]
