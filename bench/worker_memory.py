"""Peak RSS of the worker process (the one running the serving loop and vLLM's client side) with a
100-request batch, then a 10,000-request batch. Target: growth under 100 MB.

Usage: .venv/bin/python bench/worker_memory.py [--engine vllm|fake]   (vllm: SmolLM2, 1 output token each)
"""

from __future__ import annotations

import argparse
import threading
import time

import psutil
from common import CHAT_MODEL, ROOT, chat_lines, submit, wait_done

from tests.stack import Stack


def peak_rss_during(client, stack_env, lines) -> tuple[float, float]:
    import psycopg

    with psycopg.connect(stack_env["DATABASE_URL"]) as conn:
        pid = conn.execute("SELECT pid FROM batches_api_worker WHERE stopped_at IS NULL ORDER BY id DESC").fetchone()[0]
    proc = psutil.Process(pid)
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.2)

    thread = threading.Thread(target=sample)
    thread.start()
    started = time.monotonic()
    batch = wait_done(client, submit(client, lines).id, poll=1.0)
    done.set()
    thread.join()
    assert batch.status == "completed" and batch.request_counts.completed == len(lines), batch
    return peak[0] / 2**20, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["vllm", "fake"], default="vllm")
    args = parser.parse_args()
    model = CHAT_MODEL if args.engine == "vllm" else "fake-fast"
    with Stack("bench_memory", models_file=ROOT / "bench" / "models.json") as stack:
        stack.start_server()
        stack.start_worker("w", [model])
        client = stack.client()
        wait_done(client, submit(client, chat_lines(2, max_tokens=1, model=model, prefix="warm")).id, poll=0.5)
        small, small_s = peak_rss_during(client, stack.env, chat_lines(100, max_tokens=1, model=model))
        big, big_s = peak_rss_during(client, stack.env, chat_lines(10_000, max_tokens=1, model=model))
    print(f"engine {args.engine} ({model}), 1 output token per request")
    print(f"worker peak RSS, 100 requests:    {small:.0f} MB ({small_s:.0f} s)")
    print(f"worker peak RSS, 10,000 requests: {big:.0f} MB ({big_s:.0f} s)")
    print(f"growth: {big - small:.0f} MB (target < 100 MB)")


if __name__ == "__main__":
    main()
