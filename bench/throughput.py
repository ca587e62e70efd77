"""Throughput: the same 200 chat requests (64 output tokens each, ignore_eos, greedy) through the server with
a warm worker, and through vLLM's LLM.chat directly, in the same run. Prints output tokens/s and the ratio.

Target: server >= 0.95 x raw engine. Usage: .venv/bin/python bench/throughput.py [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

from common import CHAT_MODEL, ROOT, chat_lines, run_batch, to_jsonl

from tests.stack import Stack


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    lines = chat_lines(args.requests, max_tokens=args.max_tokens)

    with Stack("bench_throughput", models_file=ROOT / "bench" / "models.json") as stack:
        stack.start_server()
        stack.start_worker("w", [CHAT_MODEL])
        client = stack.client()
        run_batch(client, chat_lines(2, max_tokens=4, prefix="warm"), poll=0.5)  # loads the engine
        batch, seconds = run_batch(client, lines)
        assert batch.status == "completed" and batch.request_counts.completed == args.requests, batch
        server_tokens = batch.usage.output_tokens
        model = json.loads((ROOT / "bench" / "models.json").read_text())[CHAT_MODEL]

    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as tmp:
        tmp.write(to_jsonl(lines))
        tmp.flush()
        raw = subprocess.run([sys.executable, str(ROOT / "bench" / "raw_engine.py"), tmp.name,
                              str(ROOT / "var" / "models" / model["path"]), json.dumps(model["engine_args"])],
                             capture_output=True, text=True, check=True)
    result = json.loads(raw.stdout.strip().splitlines()[-1])
    server_rate = server_tokens / seconds
    raw_rate = result["output_tokens"] / result["generate_seconds"]
    print(f"requests: {args.requests} x {args.max_tokens} output tokens, model {CHAT_MODEL}")
    print(f"server (batches.create -> completed, warm worker): {server_tokens} tokens in {seconds:.1f} s = "
          f"{server_rate:.0f} output tok/s")
    print(f"raw vLLM LLM.chat (generation only, load {result['load_seconds']:.1f} s excluded): "
          f"{result['output_tokens']} tokens in {result['generate_seconds']:.1f} s = {raw_rate:.0f} output tok/s")
    print(f"ratio server/raw: {server_rate / raw_rate:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
