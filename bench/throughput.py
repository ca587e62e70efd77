"""Chat throughput: the same requests through the server (a warm worker) and through vLLM's LLM.chat, in the
same run, round after round. Two workloads:

- equal: 200 requests x 64 output tokens (ignore_eos, greedy);
- mixed: prompts of varied lengths, a system prompt on some, max_tokens 16-160, natural stops.

Every round has prompts of its own (a round tag opens each prompt): the server's engine lives across rounds
while each LLM.chat starts cold, so reused prompts would let the server's warm prefix cache beat its baseline.
The rounds are compared in pairs (this machine swings ±15% from run to run) and the median of the paired ratios
is reported. Target: >= 0.95 for each workload.

Usage: .venv/bin/python bench/throughput.py [--rounds 3] [--workload equal,mixed]
"""

from __future__ import annotations

import argparse
import statistics

from common import CHAT_MODEL, chat_lines, mixed_chat_lines, raw_engine, server_seconds, submit, wait_done

from tests.stack import Stack


def equal_lines(tag: str, n: int = 200) -> list[dict]:
    return chat_lines(n, max_tokens=64, prefix=f"{tag}-", tag=tag)


WORKLOADS = {"equal": equal_lines, "mixed": mixed_chat_lines}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", default="equal,mixed")
    args = parser.parse_args()
    with Stack("bench_throughput") as stack:
        stack.start_server()
        stack.start_worker("w", [CHAT_MODEL])
        client = stack.client()
        wait_done(client, submit(client, equal_lines("warm", 2)).id, poll=0.5)  # the engine is loaded and warm
        for workload in args.workload.split(","):
            ratios = []
            for round_ in range(1, args.rounds + 1):
                lines = WORKLOADS[workload](f"{workload}{round_}")
                raw = raw_engine("chat", lines, CHAT_MODEL)
                raw_rate = raw["output_tokens"] / raw["run_seconds"]
                batch = wait_done(client, submit(client, lines).id, poll=0.5)
                assert batch.status == "completed" and batch.request_counts.completed == len(lines), batch
                seconds = server_seconds(stack.env["DATABASE_URL"], batch.id)
                server_rate = batch.usage.output_tokens / seconds
                ratios.append(server_rate / raw_rate)
                print(
                    f"{workload} round {round_}: LLM.chat {raw['output_tokens']} tokens in {raw['run_seconds']:.1f} s "
                    f"= {raw_rate:.0f} tok/s (load {raw['load_seconds']:.1f} s excluded); server "
                    f"{batch.usage.output_tokens} tokens created -> completed {seconds:.1f} s = {server_rate:.0f} "
                    f"tok/s; ratio {ratios[-1]:.3f}"
                )
            print(
                f"{workload}: median of {len(ratios)} paired ratios {statistics.median(ratios):.3f} "
                f"(min {min(ratios):.3f}, max {max(ratios):.3f}; target >= 0.95)"
            )


if __name__ == "__main__":
    main()
