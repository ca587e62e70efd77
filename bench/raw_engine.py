"""vLLM's offline `LLM.chat` on the same chat requests: the baseline of bench/throughput.py.

Run as its own process (the engine needs the `if __name__ == "__main__"` guard): reads a JSONL file of chat
requests, prints a line "RESULT {json}" with load_seconds, generate_seconds and output_tokens (vLLM logs to stdout too).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(path: str, model_path: str, engine_args_json: str) -> None:
    from inference.engines.vllm import DEFAULT_ENGINE_ARGS_CPU, engine_environment, is_cpu_build

    os.environ.update(engine_environment(ROOT / "var" / "bench_cache"))
    engine_args = json.loads(engine_args_json)
    if is_cpu_build():  # the same defaults the worker's engine applies on a CPU
        engine_args = {**DEFAULT_ENGINE_ARGS_CPU, **engine_args}
    from vllm import LLM, SamplingParams

    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    body = lines[0]["body"]
    params = SamplingParams(
        max_tokens=body["max_tokens"], temperature=body["temperature"], ignore_eos=body.get("ignore_eos", False)
    )
    started = time.monotonic()
    llm = LLM(model=model_path, **engine_args)
    loaded = time.monotonic()
    outputs = llm.chat([line["body"]["messages"] for line in lines], params, use_tqdm=False)
    done = time.monotonic()
    tokens = sum(len(choice.token_ids) for output in outputs for choice in output.outputs)
    print(
        "RESULT "
        + json.dumps({"load_seconds": loaded - started, "generate_seconds": done - loaded, "output_tokens": tokens})
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
