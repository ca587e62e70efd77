"""vLLM's offline API on the same requests: the baseline of the throughput benchmarks. `chat` runs `LLM.chat`
with each request's own sampling parameters; `embed` runs `LLM.embed` on each request's input.

Run as its own process (the engine needs the `if __name__ == "__main__"` guard): reads a JSONL file of batch
request lines, prints a line "RESULT {json}" with load_seconds, run_seconds, and output_tokens (chat) or
inputs (embed). vLLM logs to stdout too. The engine gets the settings the worker's engine would: the model's
engine_args, our CPU defaults and our CPU dtype choice (inference.engines.vllm), so that both run the same model
the same way.

Usage: python bench/raw_engine.py chat|embed requests.jsonl /path/to/model '{"max_model_len": 2048}'
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker_engine_args(model_path: str, engine_args: dict) -> dict:
    """The engine arguments the worker's VLLMEngine would use for this model on this machine."""
    from vllm.engine.arg_utils import EngineArgs

    from inference.engines.vllm import DEFAULT_ENGINE_ARGS_CPU, cpu_dtype_override, is_cpu_build

    if not is_cpu_build():
        return engine_args
    engine_args = {**DEFAULT_ENGINE_ARGS_CPU, **engine_args}
    if "dtype" not in engine_args:
        config = EngineArgs(model=model_path, **engine_args).create_model_config()
        dtype = cpu_dtype_override(config.runner_type, config.dtype)
        if dtype is not None:
            engine_args["dtype"] = dtype
    return engine_args


def sampling(body: dict):
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=body.get("max_tokens"),
        temperature=body.get("temperature", 1.0),
        top_p=body.get("top_p", 1.0),
        stop=body.get("stop"),
        ignore_eos=body.get("ignore_eos", False),
    )


def main(mode: str, path: str, model_path: str, engine_args_json: str) -> None:
    from inference.engines.vllm import engine_environment

    os.environ.update(engine_environment(ROOT / "var" / "bench_cache"))
    from vllm import LLM

    bodies = [json.loads(line)["body"] for line in Path(path).read_text().splitlines() if line.strip()]
    started = time.monotonic()
    llm = LLM(model=model_path, **worker_engine_args(model_path, json.loads(engine_args_json)))
    loaded = time.monotonic()
    if mode == "chat":
        outputs = llm.chat([body["messages"] for body in bodies], [sampling(body) for body in bodies], use_tqdm=False)
        result = {"output_tokens": sum(len(choice.token_ids) for output in outputs for choice in output.outputs)}
    else:
        outputs = llm.embed([body["input"] for body in bodies], use_tqdm=False)
        result = {"inputs": len(outputs)}
    done = time.monotonic()
    figures = {"load_seconds": loaded - started, "run_seconds": done - loaded, **result}
    print("RESULT " + json.dumps(figures), flush=True)
    # The figure is out: skip the interpreter's teardown, where vLLM's CPU engine can abort ("terminate called
    # without an active exception"); the benchmark ends this process's session and whatever the engine left.
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:5])
