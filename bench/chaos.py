"""Chaos: the whole stack on PostgreSQL with two inference workers on the real engine (SmolLM2), ten batches of
100-300 chat requests of mixed lengths, and meanwhile SIGKILLs of random processes at random moments (a web
worker, a task-cluster worker, the process hosting an engine, an engine core, a whole runworker, which is then
started again as systemd would) and one PostgreSQL restart.

Prints: batches completed / total, requests lost, requests duplicated, the longest stall (the longest time in
which no request ended while work remained), and the processes of the stack left at the end.

Usage: .venv/bin/python bench/chaos.py [--seed 1] [--batches 10] [--kills 8]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
from common import CHAT_MODEL, ROOT, submit

from tests.stack import Stack, restart_postgresql

TERMINAL = ("completed", "failed", "expired", "cancelled")
TOPICS = ["the sea", "a small robot", "prime numbers", "an old library", "the moon", "a bakery", "winter", "chess"]


def mixed_lines(rng: random.Random, n: int, tag: str) -> list[dict]:
    """Chat requests of mixed lengths: short and long prompts, some with a system prompt, max_tokens 8-120,
    most ending naturally."""
    lines = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        words = " ".join(rng.choice(TOPICS) for _ in range(rng.randint(0, 60)))
        messages = [{"role": "user", "content": f"[{tag}-{i}] Tell me about {topic}. {words}"}]
        if rng.random() < 0.3:
            messages.insert(0, {"role": "system", "content": "You are a concise assistant."})
        lines.append(
            {
                "custom_id": f"{tag}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": CHAT_MODEL,
                    "messages": messages,
                    "max_tokens": rng.randint(8, 120),
                    "temperature": 0.7,
                    "ignore_eos": rng.random() < 0.2,
                },
            }
        )
    return lines


class Progress:
    """Requests ended so far, sampled twice a second straight from the database; the longest time without an
    increase while work remained, from the first result on (before it, the workers load their models), is the
    longest stall; it is kept with the wall-clock time it ended, to read beside the kills."""

    def __init__(self, database_url: str, batch_ids: list[str], total: int) -> None:
        self.url, self.batch_ids, self.total = database_url, batch_ids, total
        self.done = 0
        self.longest_stall = 0.0
        self.stall_ended = ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _count(self) -> int | None:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                return conn.execute(
                    "SELECT count(*) FROM batches_api_batchrequest WHERE batch_id = ANY(%s) AND "
                    "status IN ('responded', 'errored')",
                    [self.batch_ids],
                ).fetchone()[0]
        except psycopg.Error:
            return None  # the database is restarting: no progress is seen meanwhile

    def _watch(self) -> None:
        last_change = time.monotonic()
        while not self.stop.is_set():
            count = self._count()
            now = time.monotonic()
            if count is not None and count > self.done:
                self.done, last_change = count, now
            if 0 < self.done < self.total and now - last_change > self.longest_stall:
                self.longest_stall, self.stall_ended = now - last_change, time.strftime("%H:%M:%S")
            self.stop.wait(0.5)


class Chaos:
    def __init__(self, stack: Stack, workers: dict, rng: random.Random) -> None:
        self.stack, self.workers, self.rng = stack, workers, rng
        self.log: list[str] = []

    def _kill(self, proc: psutil.Process, what: str) -> None:
        proc.kill()
        self.log.append(f"{time.strftime('%H:%M:%S')} SIGKILL {what} (pid {proc.pid})")

    def web_worker(self) -> None:
        master = psutil.Process(self.stack.procs[0].pid)
        self._kill(self.rng.choice(master.children()), "a web worker")

    def task_worker(self) -> None:
        from batchserver.supervisor import task_workers

        tasks = next(p for p in self.stack.procs if p.name.endswith("-tasks"))
        main = psutil.Process(tasks.pid).children()[0]
        self._kill(self.rng.choice(task_workers(main.pid)), "a task-cluster worker")

    def _serving(self, name: str) -> psutil.Process:
        supervisor = psutil.Process(self.workers[name].pid)
        from batchserver.supervisor import task_workers

        return task_workers(supervisor.children()[0].pid)[0]

    def engine_host(self) -> None:
        name = self.rng.choice(sorted(self.workers))
        self._kill(self._serving(name), f"the engine host of worker {name}")

    def engine_core(self) -> None:
        name = self.rng.choice(sorted(self.workers))
        cores = [
            p
            for p in self._serving(name).children(recursive=True)
            if "EngineCore" in " ".join(p.cmdline()) or p.name().startswith("VLLM")
        ]
        if not cores:
            return self.engine_host()
        self._kill(cores[0], f"the engine core of worker {name}")

    def runworker(self) -> None:
        name = self.rng.choice(sorted(self.workers))
        proc = self.workers[name]
        proc.crash()  # SIGKILL of the runworker and its cluster; vLLM's processes are left to the watchdog
        self.log.append(f"{time.strftime('%H:%M:%S')} SIGKILL the whole runworker {name}; started again")
        self.stack.procs.remove(proc)
        self.workers[name] = self.stack.start_worker(name, [CHAT_MODEL])

    def restart_postgresql(self) -> None:
        restart_postgresql()
        self.log.append(f"{time.strftime('%H:%M:%S')} restarted PostgreSQL")


def stack_leftovers(data_dir: Path, since: float) -> list[str]:
    """Processes still running with the stack's data dir in their environment, and vLLM's engine processes
    started since `since` (they name themselves VLLM::… and do not carry the stack's environment)."""
    left = []
    for proc in psutil.process_iter(["pid", "name", "create_time", "status"]):
        try:
            if proc.pid == psutil.Process().pid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            engine = proc.info["name"].startswith("VLLM") and proc.info["create_time"] >= since
            if engine or proc.environ().get("BATCHSERVER_DATA_DIR") == str(data_dir):
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:80]}")
        except psutil.Error:
            continue
    return left


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--kills", type=int, default=8)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    begun = time.time()  # wall clock, as processes record their start
    with Stack("bench_chaos") as stack:
        stack.start_server()
        workers = {name: stack.start_worker(name, [CHAT_MODEL]) for name in ("a", "b")}
        client = stack.client()
        client = client.with_options(max_retries=10)
        inputs = {}
        for b in range(args.batches):
            lines = mixed_lines(rng, rng.randint(100, 300), f"b{b}")
            inputs[submit(client, lines).id] = lines
        total = sum(len(lines) for lines in inputs.values())
        progress = Progress(stack.env["DATABASE_URL"], list(inputs), total)
        chaos = Chaos(stack, workers, rng)
        kinds = [chaos.web_worker, chaos.task_worker, chaos.engine_host, chaos.engine_core, chaos.runworker]
        plan = kinds + [rng.choice(kinds) for _ in range(max(0, args.kills - len(kinds)))]
        rng.shuffle(plan)
        plan.insert(rng.randint(2, len(plan) - 2), chaos.restart_postgresql)
        while progress.done == 0:  # the engines load; the first results come
            time.sleep(1)
        for action in plan:
            # Random moments, but far enough apart for a killed engine to load again (30-60 s on 2 busy cores):
            # chaos faster than recovery measures nothing but the loads.
            time.sleep(rng.uniform(30, 60))
            if progress.done >= total:
                break
            try:
                action()
            except Exception as exc:  # the target was not there at that moment (restarting, say)
                chaos.log.append(f"{time.strftime('%H:%M:%S')} {action.__name__}: skipped ({exc!r})")
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            statuses = [client.batches.retrieve(batch_id).status for batch_id in inputs]
            if all(status in TERMINAL for status in statuses):
                break
            time.sleep(2)
        progress.stop.set()
        completed = lost = duplicated = 0
        for batch_id, lines in inputs.items():
            batch = client.batches.retrieve(batch_id)
            completed += batch.status == "completed"
            seen: Counter = Counter()
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    seen.update(
                        json.loads(line)["custom_id"] for line in client.files.content(file_id).text.splitlines()
                    )
            wanted = {line["custom_id"] for line in lines}
            lost += len(wanted - set(seen))
            duplicated += sum(count - 1 for count in seen.values() if count > 1)
        elapsed = time.monotonic() - started
        data_dir = Path(stack.env["BATCHSERVER_DATA_DIR"])
        loads = subprocess.run(
            [
                ".venv/bin/python",
                "manage.py",
                "shell",
                "--verbosity=0",
                "-c",
                "from inference.models import EngineLoad; "
                "s=[l.seconds for l in EngineLoad.objects.all()]; "
                "print(len(s), round(max(s), 1) if s else 0)",
            ],
            cwd=ROOT,
            env=stack.env,
            capture_output=True,
            text=True,
        ).stdout.split()[-2:]
    time.sleep(2)
    leftovers = stack_leftovers(data_dir, since=begun)
    print("\n".join(chaos.log))
    print(f"{args.batches} batches, {total} requests, 2 workers ({CHAT_MODEL}), seed {args.seed}, {elapsed:.0f} s")
    print(f"batches completed: {completed}/{args.batches}")
    print(f"requests lost: {lost}; duplicated: {duplicated}")
    print(
        f"longest stall after the first result: {progress.longest_stall:.1f} s, ended {progress.stall_ended} "
        f"(engine loads: {loads[0] if loads else '?'}, the longest {loads[1] if len(loads) > 1 else '?'} s)"
    )
    print(f"processes left at the end: {len(leftovers)}" + "".join(f"\n  {line}" for line in leftovers))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
