"""Live readers: the throughput of a batch while 16 clients follow it on GET /v1/batches/{id}/events and 4 on
GET /v1/batches/{id}/results, against the same batch with nobody watching. The server side is bench/throughput.py's
(the server, the task cluster and one warm worker on SmolLM2, a fresh database), and so is the workload: its mixed
chat requests, which end all along the run, so that the readers have new lines and new counts to read all along
(requests of one length end together, and the readers would have nothing to do until then).

Each round runs both batches (fresh prompts each, the order alternating from round to round) and compares them as a
pair; the median of the paired ratios (with readers / without) is reported. Target: >= 0.95. The readers behave as
clients do: the event streams reconnect with Last-Event-ID after the server's `retry` until they have a final status,
after a network error too (as EventSource does); the results followers read page after page, wait a moment when they
have caught up, and ask again after a network error. Each reader must end with everything (every line once; the
final status), or the round fails; network errors are counted and shown.

Usage: .venv/bin/python bench/live_readers.py [--rounds 5] [--requests 200] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import httpx
from common import CHAT_MODEL, cpu_seconds, cpu_since, mixed_chat_lines, server_seconds, submit, wait_done

from tests.stack import Stack

FINAL = ("completed", "failed", "expired", "cancelled")
EVENT_READERS, RESULT_READERS = 16, 4
RESULTS_PAUSE_SECONDS = 1.0  # a results follower that has caught up asks again after this long


class Readers:
    """The live readers of one batch, each a thread, as long as the batch runs."""

    def __init__(self, url: str, api_key: str, batch_id: str) -> None:
        self.url, self.batch_id = url, batch_id
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.events: list[int] = [0] * EVENT_READERS  # events received by each stream reader
        self.connections: list[int] = [0] * EVENT_READERS  # responses each one opened (reconnections included)
        self.finals: list[str | None] = [None] * EVENT_READERS
        self.lines: list[list[bytes]] = [[] for _ in range(RESULT_READERS)]
        self.errors: list[str] = []
        self.network_errors = 0
        self.threads = [threading.Thread(target=self._events, args=(i,), daemon=True) for i in range(EVENT_READERS)]
        self.threads += [threading.Thread(target=self._results, args=(i,), daemon=True) for i in range(RESULT_READERS)]

    def start(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self.threads):
            self.errors.append("some readers did not finish")

    def _events(self, index: int) -> None:
        last_id, retry = None, 2.0
        try:
            with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as http:
                while True:
                    headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
                    try:
                        with http.stream("GET", f"/v1/batches/{self.batch_id}/events", headers=headers) as response:
                            self.connections[index] += 1
                            if response.status_code == 204:
                                return
                            response.raise_for_status()
                            fields: dict[str, str] = {}
                            for line in response.iter_lines():
                                if line:
                                    name, _, value = line.partition(":")
                                    fields[name] = value.removeprefix(" ")
                                    continue
                                if "retry" in fields:
                                    retry = int(fields["retry"]) / 1000
                                if "data" in fields:
                                    self.events[index] += 1
                                    last_id = fields.get("id", last_id)
                                    status = json.loads(fields["data"])["status"]
                                    if status in FINAL:
                                        self.finals[index] = status
                                fields = {}
                    except httpx.TransportError:
                        self.network_errors += 1
                    if self.finals[index]:
                        return
                    time.sleep(retry)
        except Exception as exc:  # reported with the round
            self.errors.append(f"events reader {index}: {exc!r}")

    def _results(self, index: int) -> None:
        cursor = 0
        try:
            with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as http:
                while True:
                    try:
                        page = http.get(f"/v1/batches/{self.batch_id}/results", params={"after": cursor})
                    except httpx.TransportError:
                        self.network_errors += 1
                        time.sleep(RESULTS_PAUSE_SECONDS)
                        continue
                    page.raise_for_status()
                    self.lines[index].extend(page.content.splitlines())
                    cursor = int(page.headers["x-next-cursor"])
                    if page.headers["x-has-more"] == "false":
                        if page.headers["x-batch-status"] in FINAL:
                            return
                        time.sleep(RESULTS_PAUSE_SECONDS)
        except Exception as exc:
            self.errors.append(f"results reader {index}: {exc!r}")

    def check(self, total: int) -> str:
        """What the readers got, or AssertionError if one of them missed something."""
        assert not self.errors, self.errors
        assert all(final == "completed" for final in self.finals), self.finals
        for got in self.lines:
            ids = [json.loads(line)["custom_id"] for line in got]
            assert len(ids) == len(set(ids)) == total, (len(ids), len(set(ids)), total)
        return (
            f"events {min(self.events)}-{max(self.events)} per stream over {min(self.connections)}-"
            f"{max(self.connections)} responses; {total} lines to each results follower; {self.network_errors} "
            "network errors"
        )


def run(stack: Stack, client, batch_lines: list[dict], with_readers: bool) -> tuple[float, str, dict[str, float]]:
    """One batch, created -> completed; returns its output tokens/s on the server's clock, what readers got, and
    the CPU seconds each part of the machine spent meanwhile."""
    cpu_before = cpu_seconds(stack)
    batch = submit(client, batch_lines)
    readers = Readers(stack.url, stack.api_key, batch.id).start() if with_readers else None
    batch = wait_done(client, batch.id, poll=0.5)
    assert batch.status == "completed" and batch.request_counts.completed == len(batch_lines), batch
    cpu = cpu_since(stack, cpu_before)
    seen = ""
    if readers:
        readers.join(timeout=60)
        seen = readers.check(len(batch_lines))
    return batch.usage.output_tokens / server_seconds(stack.env["DATABASE_URL"], batch.id), seen, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--model", default=CHAT_MODEL, help="a model of tests/models.json (fake-echo: no real engine)")
    args = parser.parse_args()
    with Stack("bench_live_readers") as stack:
        stack.start_server()
        stack.start_worker("w", [args.model])
        client = stack.client()
        wait_done(client, submit(client, mixed_chat_lines("warm", 2, args.model)).id, poll=0.5)  # loaded and warm
        ratios = []
        for round_ in range(1, args.rounds + 1):
            rates = {}
            order = (False, True) if round_ % 2 else (True, False)
            for with_readers in order:
                tag = f"r{round_}{'w' if with_readers else 'n'}"
                rates[with_readers], seen, cpu = run(
                    stack, client, mixed_chat_lines(tag, args.requests, args.model), with_readers
                )
                if seen:
                    print(f"round {round_}: readers got {seen}")
                print(
                    f"round {round_} {'with' if with_readers else 'without'} readers, CPU seconds: "
                    + ", ".join(f"{part} {seconds:.1f}" for part, seconds in cpu.items())
                )
            ratios.append(rates[True] / rates[False])
            print(
                f"round {round_}: without readers {rates[False]:.0f} tok/s, with {EVENT_READERS} event streams and "
                f"{RESULT_READERS} results followers {rates[True]:.0f} tok/s; ratio {ratios[-1]:.3f}",
                flush=True,
            )
        print(
            f"median of {len(ratios)} paired ratios {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
            f"max {max(ratios):.3f}; target >= 0.95)"
        )


if __name__ == "__main__":
    main()
