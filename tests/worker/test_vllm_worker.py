"""End to end on the real engine: vLLM (CPU build) with SmolLM2-135M-Instruct and all-MiniLM-L6-v2, a real
worker process, the real task cluster, PostgreSQL, and the official SDK over HTTP."""

from __future__ import annotations

import math
import signal
import time
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from tests.conftest import Proc, start_worker, wait_for, wait_for_status
from tests.helpers import parse_jsonl, request_line, upload_batch_file

pytestmark = pytest.mark.engine

CHAT_MODEL = "SmolLM2-135M-Instruct"
EMBED_MODEL = "all-MiniLM-L6-v2"


def chat(custom_id: str, content: str, **body) -> dict:
    return request_line(
        custom_id,
        body={"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], "temperature": 0, **body},
    )


def run(client, lines, endpoint="/v1/chat/completions", statuses=("completed",), timeout=240):
    file = upload_batch_file(client, lines)
    batch = client.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window="24h")
    return wait_for_status(client, batch.id, set(statuses), timeout=timeout)


def outputs(client, batch) -> tuple[list[dict], list[dict]]:
    output = parse_jsonl(client.files.content(batch.output_file_id).read()) if batch.output_file_id else []
    errors = parse_jsonl(client.files.content(batch.error_file_id).read()) if batch.error_file_id else []
    return output, errors


def engine_processes(tree: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in tree:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            pass
    return alive


WORKER = "vllm-1"


class ModuleWorker:
    """The module's one real-engine worker, both models preloaded: a model load costs half a minute here, so the
    tests share it, and the crash tests at the end kill it, replace it and stop it rather than start their own."""

    def __init__(self, stack_env: dict[str, str]) -> None:
        self.env = stack_env
        self.proc: Proc | None = None

    def current(self) -> Proc:
        if self.proc is None or not self.proc.alive():
            self.replace([CHAT_MODEL, EMBED_MODEL])
        assert self.proc is not None
        return self.proc

    def replace(self, models: list[str]) -> Proc:
        """A new worker process under the same name (the last one was killed)."""
        self.proc = start_worker(self.env, WORKER, models)
        return self.proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.alive():
            self.proc.stop()


@pytest.fixture(scope="module")
def workers(stack_env, task_cluster):
    holder = ModuleWorker(stack_env)
    yield holder
    holder.stop()


@pytest.fixture
def vllm_worker(workers) -> Proc:
    return workers.current()


def test_chat_batch_answers_and_usage_adds_up(client, vllm_worker):
    lines = [
        chat("two-plus-two", "What is 2+2?", max_tokens=32),
        chat("capital", "What is the capital of France?", max_tokens=24),
        chat("seeded", "Write a word.", max_tokens=8, temperature=0.8, seed=7, n=2, logprobs=True, top_logprobs=2),
    ]
    batch = run(client, lines)
    output, errors = outputs(client, batch)
    assert errors == []
    assert [line["custom_id"] for line in output] == ["two-plus-two", "capital", "seeded"]
    completions = {line["custom_id"]: ChatCompletion.model_validate(line["response"]["body"]) for line in output}
    assert "4" in completions["two-plus-two"].choices[0].message.content
    assert len(completions["seeded"].choices) == 2
    assert completions["seeded"].choices[0].logprobs.content[0].top_logprobs
    assert all(line["response"]["status_code"] == 200 for line in output)
    assert batch.model == CHAT_MODEL
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
    assert batch.usage.input_tokens == sum(c.usage.prompt_tokens for c in completions.values()) > 0
    assert batch.usage.output_tokens == sum(c.usage.completion_tokens for c in completions.values()) > 0


def test_validation_counts_the_prompt_tokens_vllm_counts(client, vllm_worker, db_access):
    """The enqueued tokens of a batch are counted while it is validated, with the model's tokenizer and chat
    template: line by line, exactly what vLLM reports as prompt_tokens."""
    from batches_api.models import Batch
    from batches_api.tokens import count_input_tokens

    lines = [
        chat("plain", "What is 2+2?", max_tokens=2),
        request_line(
            "system-parts-turns",
            body={
                "model": CHAT_MODEL,
                "max_tokens": 2,
                "messages": [
                    {"role": "system", "content": "You answer in one word."},
                    {"role": "user", "content": "Name a fruit."},
                    {"role": "assistant", "content": "Apple."},
                    {"role": "user", "content": [{"type": "text", "text": t} for t in ("Another?", "Red.")]},
                ],
            },
        ),
    ]
    batch = run(client, lines)
    output, errors = outputs(client, batch)
    assert errors == []
    prompt_tokens = [line["response"]["body"]["usage"]["prompt_tokens"] for line in output]
    assert count_input_tokens(CHAT_MODEL, "/v1/chat/completions", [line["body"] for line in lines]) == prompt_tokens
    assert Batch.objects.get(pk=batch.id).enqueued_tokens == sum(prompt_tokens) == batch.usage.input_tokens


def test_too_long_request_gets_its_own_400_line(client, vllm_worker):
    lines = [
        chat("fine", "Say hi.", max_tokens=8),
        chat("too-long", "hello " * 3000, max_tokens=8),
        chat("bad-type", "Say hi.", max_tokens="lots"),
        chat("also-fine", "Say bye.", max_tokens=8),
    ]
    batch = run(client, lines)
    output, errors = outputs(client, batch)
    assert errors == []
    by_id = {line["custom_id"]: line["response"] for line in output}
    for bad in ("too-long", "bad-type"):
        assert by_id[bad]["status_code"] == 400
        assert set(by_id[bad]["body"]["error"]) >= {"message", "type", "param", "code"}
    assert by_id["fine"]["status_code"] == by_id["also-fine"]["status_code"] == 200
    assert batch.request_counts.model_dump() == {"total": 4, "completed": 2, "failed": 2}


def test_json_schema_response_format_and_stop(client, vllm_worker):
    import json

    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    lines = [
        chat(
            "json",
            "What is 2+2? Answer in JSON.",
            max_tokens=40,
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        ),
        chat("stop", "Count from 1 to 10 separated by commas.", max_tokens=40, stop=["5"]),
    ]
    output, _ = outputs(client, run(client, lines))
    by_id = {line["custom_id"]: ChatCompletion.model_validate(line["response"]["body"]) for line in output}
    assert isinstance(json.loads(by_id["json"].choices[0].message.content)["answer"], int)
    assert "5" not in by_id["stop"].choices[0].message.content


def test_completions_batch_on_a_warm_engine(client, vllm_worker, db_access):
    from batches_api.models import Worker
    from inference.models import EngineLoad

    lines = [
        request_line(
            f"c{i}",
            url="/v1/completions",
            body={"model": CHAT_MODEL, "prompt": f"Once upon a time {i}", "max_tokens": 12, "temperature": 0},
        )
        for i in range(4)
    ]
    batch = run(client, lines, endpoint="/v1/completions")
    output, _ = outputs(client, batch)
    for line in output:
        completion = Completion.model_validate(line["response"]["body"])
        assert completion.choices[0].text and completion.usage.completion_tokens > 0
    worker = Worker.objects.get(pid__in=[p.pid for p in vllm_worker.tree()], stopped_at__isnull=True)
    # Three batches so far on this worker: each model loaded once, at start (both are preloaded), never again.
    assert sorted(EngineLoad.objects.filter(worker=worker).values_list("model", flat=True)) == [CHAT_MODEL, EMBED_MODEL]


def test_responses_batch(client, vllm_worker):
    from openai.types.responses import Response

    lines = [
        request_line(
            f"resp-{i}",
            url="/v1/responses",
            body={"model": CHAT_MODEL, "input": "What is 2+2?", "max_output_tokens": 24, "temperature": 0},
        )
        for i in range(2)
    ]
    batch = run(client, lines, endpoint="/v1/responses")
    output, errors = outputs(client, batch)
    assert errors == []
    responses = [Response.model_validate(line["response"]["body"]) for line in output]
    assert all(r.output_text and r.usage.output_tokens > 0 for r in responses)
    assert batch.usage.output_tokens == sum(r.usage.output_tokens for r in responses)


def test_cancel_during_a_real_run(client, vllm_worker):
    lines = [chat(f"short-{i}", "Say yes.", max_tokens=2) for i in range(4)] + [
        chat(f"long-{i}", "Tell a very long story.", max_tokens=1500, ignore_eos=True) for i in range(6)
    ]
    file = upload_batch_file(client, lines)
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 4, 120, message="the short requests")
    started = time.monotonic()
    client.batches.cancel(batch.id)
    batch = wait_for_status(client, batch.id, {"cancelled"}, timeout=30)
    assert time.monotonic() - started < 5
    output, errors = outputs(client, batch)
    assert {line["custom_id"] for line in output} >= {f"short-{i}" for i in range(4)}
    assert sorted(line["custom_id"] for line in output + errors) == sorted(line["custom_id"] for line in lines)
    assert all(line["error"]["code"] == "batch_cancelled" for line in errors)


def test_expiry_during_a_real_run(client, vllm_worker, db_access):
    from batches_api.models import Batch

    lines = [chat(f"short-{i}", "Say yes.", max_tokens=2) for i in range(3)] + [
        chat(f"long-{i}", "Tell a very long story.", max_tokens=1500, ignore_eos=True) for i in range(3)
    ]
    file = upload_batch_file(client, lines)
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 3, 120)
    Batch.objects.filter(pk=batch.id).update(
        expires_at=Batch.objects.get(pk=batch.id).created_at - timedelta(seconds=1)
    )
    batch = wait_for_status(client, batch.id, {"expired"}, timeout=30)
    output, errors = outputs(client, batch)
    assert {line["custom_id"] for line in output} >= {f"short-{i}" for i in range(3)}
    assert errors and all(line["error"]["code"] == "batch_expired" for line in errors)
    assert sorted(line["custom_id"] for line in output + errors) == sorted(line["custom_id"] for line in lines)


def test_embeddings_batch(client, vllm_worker):
    sentences = {
        "cat": "A cat sits on the mat.",
        "cat2": "There is a cat sitting on a mat.",
        "market": "The stock market fell sharply today.",
    }
    lines = [
        request_line(key, url="/v1/embeddings", body={"model": EMBED_MODEL, "input": text})
        for key, text in sentences.items()
    ]
    batch = run(client, lines, endpoint="/v1/embeddings")
    output, _ = outputs(client, batch)
    vectors = {}
    for line in output:
        response = CreateEmbeddingResponse.model_validate(line["response"]["body"])
        vectors[line["custom_id"]] = response.data[0].embedding
        assert response.usage.prompt_tokens > 0
    assert all(len(v) == 384 for v in vectors.values())

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    assert cosine(vectors["cat"], vectors["cat2"]) > cosine(vectors["cat"], vectors["market"]) + 0.2
    assert batch.usage.input_tokens > 0 and batch.usage.output_tokens == 0


def test_rerank_batch_orders_by_relevance_and_scores_by_cosine(client, vllm_worker):
    """20 rerank lines come back as `vllm serve` answers them: results sorted by relevance, cut to top_n, and each
    relevance score the cosine similarity of the query's and the document's embeddings (from an embeddings batch)."""
    documents = [
        "A cat sleeps on the warm windowsill.",
        "The stock market fell sharply today.",
        "Kittens love to chase balls of yarn.",
        "Heavy rain is expected this weekend.",
        "The recipe needs two cups of flour.",
        "Dogs and cats can live together peacefully.",
        "The central bank raised interest rates.",
        "A tabby cat is sitting on the mat.",
    ]
    queries = ["Where is the cat?", "What happened to stocks?", "Will it rain?", "How do I bake bread?"]
    lines = []
    for i in range(20):
        body = {"model": EMBED_MODEL, "query": queries[i % 4], "documents": documents[i % 3 :]}
        if i % 5:
            body["top_n"] = [0, 1, 3, 100][i % 4]
        lines.append(request_line(f"rerank-{i}", url="/v1/rerank", body=body))
    batch = run(client, lines, endpoint="/v1/rerank")
    output, errors = outputs(client, batch)
    assert errors == [] and [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]
    assert batch.model == EMBED_MODEL
    assert batch.request_counts.model_dump() == {"total": 20, "completed": 20, "failed": 0}

    texts = queries + documents
    embed_lines = [
        request_line(f"e{i}", url="/v1/embeddings", body={"model": EMBED_MODEL, "input": text})
        for i, text in enumerate(texts)
    ]
    embedded = run(client, embed_lines, endpoint="/v1/embeddings")
    vectors = {
        texts[int(line["custom_id"][1:])]: line["response"]["body"]["data"][0]["embedding"]
        for line in outputs(client, embedded)[0]
    }

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    for line, sent in zip(output, lines, strict=True):
        assert line["response"]["status_code"] == 200
        body, asked = line["response"]["body"], sent["body"]
        assert body["id"].startswith("score-") and body["model"] == EMBED_MODEL
        top_n = asked.get("top_n", 0)
        expected = sorted(
            range(len(asked["documents"])),
            key=lambda index: cosine(vectors[asked["query"]], vectors[asked["documents"][index]]),
            reverse=True,
        )[: top_n or None]
        assert [result["index"] for result in body["results"]] == expected
        for result in body["results"]:
            assert result["document"] == {"text": asked["documents"][result["index"]], "multi_modal": None}
            similarity = cosine(vectors[asked["query"]], vectors[asked["documents"][result["index"]]])
            assert abs(result["relevance_score"] - similarity) < 1e-4
    assert batch.usage.input_tokens == sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in output) > 0
    assert batch.usage.output_tokens == 0


def test_kill_9_mid_batch_then_a_new_worker_finishes_it(client, workers, db_access):
    """SIGKILL of the worker's own processes (supervisor, cluster, serving loop), as a machine or OOM kill does:
    the engine processes it leaves end by themselves (their watchdog), and a new worker finishes the batch, every
    custom_id once."""
    from batches_api.models import BatchRequest

    first = workers.current()
    lines = [chat(f"k{i}", f"Count to {i}.", max_tokens=24 if i % 3 else 200, ignore_eos=True) for i in range(24)]
    file = upload_batch_file(client, lines)
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 4, 180, message="some results")
    wait_for(lambda: BatchRequest.objects.filter(batch_id=batch.id, status="running").exists(), 30)
    orphans = first.crash()  # SIGKILL of the worker's own processes; vLLM's engine core is left orphaned
    assert orphans, "the engine processes should have outlived the killed worker"
    wait_for(lambda: not engine_processes(orphans), 60, interval=1, message="orphaned engine processes to end")
    workers.replace([CHAT_MODEL])
    batch = wait_for_status(client, batch.id, {"completed"}, timeout=300)
    output, errors = outputs(client, batch)
    assert errors == []
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]
    assert batch.request_counts.completed == 24


def test_a_killed_engine_host_heals_within_30_s_plus_a_load(client, vllm_worker, db_access):
    """The deployment of `make run`, one worker: SIGKILL of the process hosting the engine (as the kernel's OOM
    killer does). Its supervisor replaces it; the requests it held run again within 30 s plus one model load;
    every custom_id ends exactly once, and no engine process of the dead one is left."""
    from batches_api.models import BatchRequest, Worker
    from inference.models import EngineLoad

    lines = [chat(f"m{i}", f"Count to {i}.", max_tokens=8 + (i * 37) % 120, ignore_eos=True) for i in range(40)]
    file = upload_batch_file(client, lines)
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 4, 240, message="some results")
    victim = Worker.objects.alive().get(pid__in=[p.pid for p in vllm_worker.tree()])
    engine = psutil.Process(victim.pid).children(recursive=True)
    held = set(BatchRequest.objects.filter(batch_id=batch.id, status="running").values_list("id", flat=True))
    assert engine and held
    killed_at = timezone.now()
    psutil.Process(victim.pid).kill()
    killed = time.monotonic()
    wait_for(
        lambda: (
            BatchRequest.objects.filter(pk__in=held, status__in=["running", "responded"])
            .exclude(worker=victim)
            .exists()
        ),
        180,
        interval=0.2,
        message="the requests to run again",
    )
    resumed = time.monotonic() - killed
    # The replacement loads the worker's models (one here, after the test before; both when this test runs alone).
    loads = EngineLoad.objects.filter(worker__name=WORKER, started_at__gte=killed_at).exclude(worker=victim)
    load = sum(loads.values_list("seconds", flat=True))
    assert load > 0
    print(f"requests running again {resumed:.1f} s after the kill, of which {load:.1f} s loading models")
    assert resumed <= 30 + load
    batch = wait_for_status(client, batch.id, {"completed"}, timeout=300)
    output, errors = outputs(client, batch)
    assert errors == []
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]
    wait_for(lambda: not engine_processes(engine), 30, interval=1, message="the dead process's engine to end")


def test_sigterm_stops_worker_and_engine_within_10_seconds(client, vllm_worker):
    wait_for(lambda: len(vllm_worker.tree()) > 4, 30, message="the engine processes")
    tree = vllm_worker.tree()
    took = vllm_worker.stop(signal.SIGTERM)
    assert took < 10, f"stopping took {took:.1f} s"
    assert engine_processes(tree) == []
