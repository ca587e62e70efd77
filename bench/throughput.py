"""Throughput: the same 200 chat requests (64 output tokens each, ignore_eos, greedy) through the server with
a warm worker, and through vLLM's LLM.chat directly, in the same run. Prints output tokens/s and the ratio.

The two are measured in alternation, several rounds, on the same machine state (the stack stays up, its
worker idle, while the raw engine runs); the best round of each is compared, as run-to-run noise on a small
machine is several percent. Target: server >= 0.95 x raw engine.

Usage: .venv/bin/python bench/throughput.py [--requests 200 --max-tokens 64 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

import psycopg
from common import CHAT_MODEL, ROOT, chat_lines, run_batch, to_jsonl

from tests.stack import Stack

MODELS_FILE = ROOT / "bench" / "models.json"


def raw_engine(lines) -> dict:
    model = json.loads(MODELS_FILE.read_text())[CHAT_MODEL]
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as tmp:
        tmp.write(to_jsonl(lines))
        tmp.flush()
        raw = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "raw_engine.py"),
                tmp.name,
                str(ROOT / "var" / "models" / model["path"]),
                json.dumps(model["engine_args"]),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(next(line for line in raw.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    lines = chat_lines(args.requests, max_tokens=args.max_tokens)
    server_rates, raw_rates = [], []
    print(f"requests: {args.requests} x {args.max_tokens} output tokens (ignore_eos, greedy), model {CHAT_MODEL}")
    with Stack("bench_throughput", models_file=MODELS_FILE) as stack:
        stack.start_server()
        stack.start_worker("w", [CHAT_MODEL])
        client = stack.client()
        run_batch(client, chat_lines(2, max_tokens=4, prefix="warm"), poll=0.5)  # loads the engine
        for round_ in range(1, args.rounds + 1):
            result = raw_engine(lines)
            raw_rates.append(result["output_tokens"] / result["generate_seconds"])
            print(
                f"round {round_} raw vLLM LLM.chat: {result['output_tokens']} tokens in "
                f"{result['generate_seconds']:.1f} s (load {result['load_seconds']:.1f} s excluded) = "
                f"{raw_rates[-1]:.0f} output tok/s"
            )
            batch, seconds = run_batch(client, lines, poll=0.5)
            assert batch.status == "completed" and batch.request_counts.completed == args.requests, batch
            with psycopg.connect(stack.env["DATABASE_URL"]) as conn:  # the server's own clock, in microseconds
                recorded = float(
                    conn.execute(
                        "SELECT EXTRACT(EPOCH FROM completed_at - created_at) FROM batches_api_batch WHERE id = %s",
                        [batch.id],
                    ).fetchone()[0]
                )
            server_rates.append(batch.usage.output_tokens / recorded)
            print(
                f"round {round_} server: {batch.usage.output_tokens} tokens, created_at -> completed_at "
                f"{recorded:.1f} s (validation and output files included) = {server_rates[-1]:.0f} output tok/s; "
                f"the client, polling every 0.5 s, saw {seconds:.1f} s"
            )
    print(
        f"best server {max(server_rates):.0f} tok/s, best raw {max(raw_rates):.0f} tok/s, "
        f"ratio {max(server_rates) / max(raw_rates):.3f} (target >= 0.95)"
    )


if __name__ == "__main__":
    main()
