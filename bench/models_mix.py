"""Two models on one worker: 6 chat batches (SmolLM2) and 6 embedding batches (MiniLM) submitted alternately, on a
worker that keeps both loaded; against the same two workloads run back to back (all chat, then all embeddings)
on the same warm worker. Prints both totals, their ratio, and the number of model loads.

Target: 2 loads in all (the preload), and the interleaved total within 10% of the back-to-back one.
Usage: .venv/bin/python bench/models_mix.py [--chat 40] [--inputs 200]
"""

from __future__ import annotations

import argparse
import time

import httpx
import psycopg
from common import CHAT_MODEL, EMBED_MODEL, default_models_file, submit, wait_done

from tests.stack import Stack, wait_for

BATCHES = 6


def chat_batch(tag: str, n: int) -> list[dict]:
    return [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": CHAT_MODEL,
                "max_tokens": 16 + (i * 13) % 48,
                "temperature": 0,
                "messages": [{"role": "user", "content": f"[{tag}] Tell me about the number {i}."}],
            },
        }
        for i in range(n)
    ]


def embedding_batch(tag: str, n: int) -> list[dict]:
    return [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED_MODEL, "input": f"[{tag}] sentence {i} " + "about the sea " * (i % 12)},
        }
        for i in range(n)
    ]


def run_all(client, workloads: list[tuple[list[dict], str]]) -> float:
    started = time.monotonic()
    ids = [submit(client, lines, endpoint).id for lines, endpoint in workloads]
    for batch_id in ids:
        assert wait_done(client, batch_id, poll=0.2).status == "completed"
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chat", type=int, default=40, help="requests per chat batch")
    parser.add_argument("--inputs", type=int, default=200, help="inputs per embedding batch")
    args = parser.parse_args()
    with Stack("bench_mix", models_file=default_models_file()) as stack:
        url = stack.start_server()
        stack.start_worker("w", [CHAT_MODEL, EMBED_MODEL])
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 600, interval=0.5)
        client = stack.client()

        def chats(tag):
            return [(chat_batch(f"{tag}{b}", args.chat), "/v1/chat/completions") for b in range(BATCHES)]

        def embeddings(tag):
            return [(embedding_batch(f"{tag}{b}", args.inputs), "/v1/embeddings") for b in range(BATCHES)]

        back_to_back = run_all(client, chats("c")) + run_all(client, embeddings("e"))
        mixed = [pair for both in zip(chats("mc"), embeddings("me"), strict=True) for pair in both]
        interleaved = run_all(client, mixed)
        with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
            (loads,) = conn.execute("SELECT count(*) FROM inference_engineload").fetchone()
    print(f"{BATCHES} chat batches x {args.chat} requests and {BATCHES} embedding batches x {args.inputs} inputs")
    print(
        f"back to back on warm engines: {back_to_back:.1f} s; submitted alternately: {interleaved:.1f} s; "
        f"ratio {interleaved / back_to_back:.3f} (target <= 1.10); model loads in all: {loads} (target 2)"
    )


if __name__ == "__main__":
    main()
