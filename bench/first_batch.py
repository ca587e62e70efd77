"""The first batch after a start: a worker serving the default models (SmolLM2 and MiniLM) preloads them and
says it is ready (/readyz); then the first 3-request chat batch, from batches.create to completed as a client
polling every 0.1 s sees it, split into the engine's generation time and the rest.

Target: the first batch takes at most 2 s plus its generation (no model load on its path).
Usage: .venv/bin/python bench/first_batch.py
"""

from __future__ import annotations

import time

import httpx
import psycopg
from common import CHAT_MODEL, EMBED_MODEL, chat_lines, default_models_file, run_batch

from tests.stack import Stack, wait_for


def main() -> None:
    with Stack("bench_first", models_file=default_models_file()) as stack:
        url = stack.start_server()
        started = time.monotonic()
        stack.start_worker("w", [CHAT_MODEL, EMBED_MODEL])

        def ready() -> bool:
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200

        wait_for(ready, 600, interval=0.2, message="the worker to be ready")
        to_ready = time.monotonic() - started
        batch, seconds = run_batch(stack.client(), chat_lines(3, max_tokens=32), poll=0.1)
        assert batch.status == "completed", batch
        with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
            (generation,) = conn.execute(
                "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(claimed_at)) FROM batches_api_batchrequest "
                "WHERE batch_id = %s",
                [batch.id],
            ).fetchone()
            (loads,) = conn.execute("SELECT count(*) FROM inference_engineload").fetchone()
    generation = float(generation)
    print(f"worker ready (both models preloaded, {loads} loads) {to_ready:.1f} s after it started")
    print(
        f"first 3-request batch after ready: create -> completed {seconds:.2f} s = generation {generation:.2f} s "
        f"+ {seconds - generation:.2f} s (target: <= 2 s + generation)"
    )


if __name__ == "__main__":
    main()
