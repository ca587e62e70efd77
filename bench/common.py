"""Shared pieces of the benchmarks: chat request lines, running a batch through the SDK, timing it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHAT_MODEL = "SmolLM2-135M-Instruct"
EMBED_MODEL = "all-MiniLM-L6-v2"


def chat_lines(
    n: int, *, max_tokens: int, model: str = CHAT_MODEL, ignore_eos: bool = True, prefix: str = "q", tag: str = ""
):
    """`n` greedy chat requests, custom ids `prefix`0, 1, …; a `tag` opens every prompt (fresh prompts per round)."""
    opening = f"[{tag}] " if tag else ""
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
                "messages": [{"role": "user", "content": f"{opening}Tell me a story about the number {i}."}],
            },
        }
        for i in range(n)
    ]


SYSTEM = "You are a helpful assistant. Answer clearly."
TOPICS = ["the sea", "a lighthouse", "prime numbers", "an old map", "the moon", "bread", "winter", "chess", "rivers"]


def mixed_chat_lines(
    tag: str,
    n: int = 200,
    model: str = CHAT_MODEL,
    *,
    rng: random.Random | None = None,
    max_words: int = 120,
    system_share: float = 0.4,
) -> list[dict]:
    """`n` greedy chat requests of mixed lengths, as a real batch holds them: prompts of varied lengths (each opened by
    `tag`-i: fresh prompts per round), a system prompt on some, max_tokens 16-160 and natural stops, so that they end
    all along the run rather than together. `rng`: draw from it (default: a generator seeded with `tag`)."""
    rng = rng or random.Random(tag)
    lines = []
    for i in range(n):
        words = " ".join(rng.choice(TOPICS) for _ in range(rng.randint(0, max_words)))
        messages = [{"role": "user", "content": f"[{tag}-{i}] Tell me about {rng.choice(TOPICS)}. {words}"}]
        if system_share and rng.random() < system_share:
            messages.insert(0, {"role": "system", "content": SYSTEM})
        lines.append(
            {
                "custom_id": f"{tag}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": model,
                    "messages": messages,
                    "max_tokens": rng.randint(16, 160),
                    "temperature": 0,
                },
            }
        )
    return lines


def default_models_file() -> Path:
    """A models file with make run's two models only, SmolLM2 and MiniLM as tests/models.json sets them up: /readyz
    says ready once every served model is loaded, so a stack that waits for it serves no test models."""
    models = json.loads((ROOT / "tests" / "models.json").read_text())
    path = ROOT / "var" / "bench_default_models.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({name: models[name] for name in (CHAT_MODEL, EMBED_MODEL)}))
    return path


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


def raw_engine(mode: str, lines: list[dict], model: str, models_file: Path | None = None) -> dict:
    """vLLM's offline API on the same request lines, in a process of its own (bench/raw_engine.py): `chat` or
    `embed`. Returns its RESULT: load_seconds, run_seconds, and output_tokens or inputs."""
    import subprocess
    import tempfile

    spec = json.loads((models_file or ROOT / "tests" / "models.json").read_text())[model]
    with (
        tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as tmp,
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        tmp.write(to_jsonl(lines))
        tmp.flush()
        # A session of its own: the engine's processes (which outlive the script when it ends without its teardown,
        # and would hold a pipe open) are ended with it. Output goes to files: waiting for the script is enough.
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "raw_engine.py"),
                mode,
                tmp.name,
                str(ROOT / "var" / "models" / spec["path"]),
                json.dumps(spec["engine_args"]),
            ],
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            proc.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever the engine left behind
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        if proc.returncode:
            raise RuntimeError(f"bench/raw_engine.py failed ({proc.returncode}):\n{stderr[-3000:]}")
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])


def server_seconds(database_url: str, batch_id: str) -> float:
    """A batch's time on the server's own clock: created_at -> completed_at (validation, finalizing included)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        (seconds,) = conn.execute(
            "SELECT EXTRACT(EPOCH FROM completed_at - created_at) FROM batches_api_batch WHERE id = %s", [batch_id]
        ).fetchone()
    return float(seconds)


def cpu_seconds(stack) -> dict[str, float]:
    """CPU time (user + system) so far of each part of a tests.stack.Stack, of this process (the benchmark's
    clients) and of the whole machine; what the machine spent beyond them is mostly PostgreSQL. The workers' vLLM
    engine processes (named VLLM::…) are counted apart from the workers' own processes, as "engines"."""
    import psutil

    def tree(pids: list[int], engines: bool = False) -> float:
        total = 0.0
        for pid in pids:
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    if proc.name().startswith("VLLM") == engines:
                        times = proc.cpu_times()
                        total += times.user + times.system
            except psutil.Error:
                continue
        return total

    machine = psutil.cpu_times()
    me = psutil.Process().cpu_times()
    workers = [p.pid for p in stack.procs if "worker" in p.name]
    return {
        "clients": me.user + me.system,
        "web": tree([p.pid for p in stack.procs if p.name.endswith("-server")]),
        "task cluster": tree([p.pid for p in stack.procs if p.name.endswith("-tasks")]),
        "workers": tree(workers),
        "engines": tree(workers, engines=True),
        "machine": machine.user + machine.system + getattr(machine, "irq", 0) + getattr(machine, "softirq", 0),
    }


def cpu_since(stack, before: dict[str, float]) -> dict[str, float]:
    """CPU seconds of each part since `before` (cpu_seconds), with the machine's rest as "PostgreSQL and the rest"."""
    now = cpu_seconds(stack)
    spent = {part: now[part] - before[part] for part in now}
    machine = spent.pop("machine")
    return {**spent, "PostgreSQL and the rest": machine - sum(spent.values())}
