"""Embeddings: 20,000 inputs of mixed lengths (one per request line) through the server, against vLLM's
LLM.embed on the same inputs, in the same run, round after round with inputs of their own; the median of the
paired ratios is reported (this machine swings ±15% from run to run). Target: >= 0.95.

Usage: .venv/bin/python bench/embeddings.py [--inputs 20000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import random
import statistics

from common import EMBED_MODEL, cpu_seconds, cpu_since, raw_engine, server_seconds, submit, wait_done

from tests.stack import Stack

MODEL = EMBED_MODEL
WORDS = "the sea a lighthouse keeps watch over ships that pass in the night while the wind carries salt".split()


def lines(tag: str, n: int) -> list[dict]:
    rng = random.Random(tag)
    return [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": f"[{tag}-{i}] " + " ".join(rng.choices(WORDS, k=rng.randint(3, 120)))},
        }
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ratios = []
    with Stack("bench_embeddings") as stack:
        stack.start_server()
        stack.start_worker("w", [MODEL])
        client = stack.client()
        wait_done(client, submit(client, lines("warm", 4), "/v1/embeddings").id, poll=0.5)
        for round_ in range(1, args.rounds + 1):
            batch_lines = lines(f"r{round_}", args.inputs)
            raw = raw_engine("embed", batch_lines, MODEL)
            raw_rate = raw["inputs"] / raw["run_seconds"]
            cpu_before = cpu_seconds(stack)
            batch = wait_done(client, submit(client, batch_lines, "/v1/embeddings").id, poll=0.5)
            cpu = cpu_since(stack, cpu_before)
            assert batch.status == "completed" and batch.request_counts.completed == args.inputs, batch
            seconds = server_seconds(stack.env["DATABASE_URL"], batch.id)
            server_rate = args.inputs / seconds
            ratios.append(server_rate / raw_rate)
            print(
                f"round {round_}: LLM.embed {raw['inputs']} inputs in {raw['run_seconds']:.1f} s = {raw_rate:.0f}/s "
                f"(load {raw['load_seconds']:.1f} s excluded); server created -> completed {seconds:.1f} s = "
                f"{server_rate:.0f}/s; ratio {ratios[-1]:.3f}"
            )
            # The worker's own CPU per input bounds what one worker process feeds a faster (GPU) engine.
            print(
                "  server's CPU per input: "
                + ", ".join(f"{part} {spent / args.inputs * 1000:.2f} ms" for part, spent in cpu.items() if spent)
            )
    print(f"median of {len(ratios)} paired ratios {statistics.median(ratios):.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
