"""Shared pieces of the benchmarks: chat request lines, running a batch through the SDK, timing it."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHAT_MODEL = "SmolLM2-135M-Instruct"


def chat_lines(n: int, *, max_tokens: int, model: str = CHAT_MODEL, ignore_eos: bool = True, prefix: str = "q"):
    return [
        {
            "custom_id": f"{prefix}{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": ignore_eos,
                "messages": [{"role": "user", "content": f"Tell me a story about the number {i}."}],
            },
        }
        for i in range(n)
    ]


def to_jsonl(lines) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def submit(client, lines, endpoint: str = "/v1/chat/completions"):
    file = client.files.create(file=("bench.jsonl", io.BytesIO(to_jsonl(lines))), purpose="batch")
    return client.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window="24h")


def wait_done(client, batch_id: str, poll: float = 0.1, timeout: float = 3600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(poll)
    raise TimeoutError(f"batch {batch_id} did not finish in {timeout} s")


def run_batch(client, lines, poll: float = 0.1):
    """Submit and wait; returns (batch, seconds from batches.create to completed as the client saw it)."""
    started = time.monotonic()
    batch = submit(client, lines)
    batch = wait_done(client, batch.id, poll=poll)
    return batch, time.monotonic() - started
