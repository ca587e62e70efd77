"""The real vLLM engine through EngineHost, with the real SmolLM2 and MiniLM folders.

Plain pytest (no Django, no database). The model folders are prepared by
inference.model_setup (once) under $BATCHSERVER_MODELS_DIR, or $BATCHSERVER_DATA_DIR/models
(default /work/main/var/models). Each model is loaded once for the module. Takes about
2-3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("vllm")

from inference.engines.base import EngineResponse, ModelSpec
from inference.engines.host import EngineHost
from inference.engines.vllm import engine_environment
from inference.model_setup import prepare_minilm, prepare_smollm2

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("BATCHSERVER_DATA_DIR", ROOT / "var"))
MODELS_DIR = Path(os.environ.get("BATCHSERVER_MODELS_DIR", DATA_DIR / "models"))
CACHE_DIR = DATA_DIR / "cache"

CHAT_MODEL = "SmolLM2-135M-Instruct"
EMBED_MODEL = "all-MiniLM-L6-v2"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
SCORE = "/v1/score"
RERANK = "/v1/rerank"


def chat_spec() -> ModelSpec:
    return ModelSpec(name=CHAT_MODEL, path=str(MODELS_DIR / CHAT_MODEL), engine_args={"max_model_len": 2048})


def embed_spec() -> ModelSpec:
    return ModelSpec(
        name=EMBED_MODEL,
        path=str(MODELS_DIR / EMBED_MODEL),
        engine_args={"runner": "pooling", "max_model_len": 256},
    )


@pytest.fixture(scope="module")
def engine_env():
    """The engine environment (1 GiB KV cache, caches under the data dir) for this module."""
    env = {
        **engine_environment(CACHE_DIR, kv_cache_gib=1),
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def models(engine_env) -> Path:
    prepare_smollm2(MODELS_DIR / CHAT_MODEL)
    prepare_minilm(MODELS_DIR / EMBED_MODEL)
    return MODELS_DIR


@pytest.fixture(scope="module")
def host(models):
    """One host with both models loaded side by side, as a worker keeps them."""
    host = EngineHost()
    assert host.ensure_loaded(chat_spec()) is True
    assert host.ensure_loaded(embed_spec()) is True
    yield host
    host.shutdown()


_counter = iter(range(1_000_000))


def call(host: EngineHost, model: str, endpoint: str, body: dict, timeout: float = 60) -> EngineResponse:
    return host.submit(model, f"t{next(_counter)}", endpoint, body).result(timeout=timeout)


def ask(content: str, **params) -> dict:
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], **params}


def assert_error(r: EngineResponse, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.body
    error = r.body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status and error["message"]
    if param is not None:
        assert error["param"] == param
    assert (r.input_tokens, r.output_tokens) == (0, 0)
    return error


# ---- chat model ----


def test_load_is_warm_and_watched(host):
    assert host.loaded_models == [CHAT_MODEL, EMBED_MODEL]
    assert host.ensure_loaded(chat_spec()) is False  # no reload for the same spec
    assert {CHAT, COMPLETIONS} <= host.endpoints(CHAT_MODEL)
    pids = host.child_pids(CHAT_MODEL)
    assert pids and all(psutil.pid_exists(p) for p in pids)
    assert host.watchdog_pid(CHAT_MODEL) is not None


def test_greedy_chat(host):
    r = call(host, CHAT_MODEL, CHAT, ask("What is 2+2?", temperature=0, max_tokens=30))
    assert r.status_code == 200, r.body
    body = r.body
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == CHAT_MODEL
    choice = body["choices"][0]
    assert "4" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 30
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert (r.input_tokens, r.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert body["system_fingerprint"].startswith("vllm-")


def test_completions(host):
    r = call(
        host,
        CHAT_MODEL,
        COMPLETIONS,
        {"model": CHAT_MODEL, "prompt": ["The capital of France is", "1, 2, 3,"], "max_tokens": 8, "temperature": 0},
    )
    assert r.status_code == 200, r.body
    assert r.body["object"] == "text_completion" and r.body["id"].startswith("cmpl-")
    assert [c["index"] for c in r.body["choices"]] == [0, 1]
    assert "Paris" in r.body["choices"][0]["text"]
    assert r.output_tokens == 16 and r.input_tokens > 0


def test_n_and_seed(host):
    body = ask("Name a fruit.", n=3, temperature=1.0, seed=1234, max_tokens=12)
    a, b = call(host, CHAT_MODEL, CHAT, body), call(host, CHAT_MODEL, CHAT, body)
    assert a.status_code == 200, a.body
    assert [c["index"] for c in a.body["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in a.body["choices"]]
    assert texts == [c["message"]["content"] for c in b.body["choices"]]  # same seed, same samples
    assert 3 <= a.output_tokens <= 36


def test_seeded_requests_with_long_prompts_together_keep_the_engine_alive(host):
    """Twelve seeded requests of ~600 tokens at once: more than one step's token budget, so a prompt would be split
    across steps, which kills vLLM's CPU engine core for a seeded request (see DEFAULT_ENGINE_ARGS_CPU)."""
    filler = " ".join(["lighthouse"] * 600)
    futures = [
        host.submit(CHAT_MODEL, f"seeded{i}", CHAT, ask(f"{i} {filler}", seed=i, temperature=1.0, max_tokens=4))
        for i in range(12)
    ]
    answers = [future.result(timeout=180) for future in futures]
    assert [r.status_code for r in answers] == [200] * 12, [r.body for r in answers if r.status_code != 200]
    assert not host.engine_dead(CHAT_MODEL)


def test_logprobs(host):
    r = call(host, CHAT_MODEL, CHAT, ask("Say hello.", temperature=0, max_tokens=5, logprobs=True, top_logprobs=2))
    assert r.status_code == 200, r.body
    content = r.body["choices"][0]["logprobs"]["content"]
    assert len(content) == r.output_tokens
    assert all(len(tok["top_logprobs"]) == 2 and tok["logprob"] <= 0 for tok in content)


def test_response_format_json_schema(host):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    r = call(
        host,
        CHAT_MODEL,
        CHAT,
        ask(
            "What is 2+2? Reply in JSON.",
            temperature=0,
            max_tokens=40,
            response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": schema}},
        ),
    )
    assert r.status_code == 200, r.body
    parsed = json.loads(r.body["choices"][0]["message"]["content"])
    assert isinstance(parsed["answer"], int)


def test_stop(host):
    r = call(
        host,
        CHAT_MODEL,
        COMPLETIONS,
        {"model": CHAT_MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 20, "temperature": 0, "stop": ["7"]},
    )
    assert r.status_code == 200, r.body
    choice = r.body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "7"
    assert "7" not in choice["text"] and "6" in choice["text"]


def test_responses_endpoint(host):
    r = call(
        host,
        CHAT_MODEL,
        RESPONSES,
        {"model": CHAT_MODEL, "input": "What is 2+2?", "temperature": 0, "max_output_tokens": 30},
    )
    assert r.status_code == 200, r.body
    assert r.body["object"] == "response" and r.body["status"] == "completed"
    text = r.body["output"][-1]["content"][0]["text"]
    assert "4" in text
    assert r.input_tokens > 0 and r.output_tokens > 0


def test_prompt_too_long_is_400(host):
    r = call(host, CHAT_MODEL, CHAT, ask("hello " * 2100, max_tokens=5))
    error = assert_error(r, 400, "input_tokens")
    assert "maximum context length is 2048" in error["message"]


@pytest.mark.parametrize(
    "endpoint,body,status,param",
    [
        (CHAT, ask("hi", max_tokens="lots"), 400, "body.max_tokens"),
        (CHAT, {"model": CHAT_MODEL}, 400, "body.messages"),
        (CHAT, ask("hi", temperature=-1), 400, None),
        (CHAT, ask("hi", stream=True), 400, "stream"),
        (CHAT, {**ask("hi"), "model": "no-such-model"}, 404, "model"),
        (COMPLETIONS, {"model": CHAT_MODEL, "prompt": "x", "n": 0}, 400, None),
        (EMBEDDINGS, {"model": CHAT_MODEL, "input": "x"}, 400, "url"),
    ],
)
def test_bad_requests(host, endpoint, body, status, param):
    assert_error(call(host, CHAT_MODEL, endpoint, body), status, param)


def test_concurrent_requests(host):
    futures = [
        host.submit(CHAT_MODEL, f"conc-{i}", CHAT, ask(f"Count to {i}.", max_tokens=16, temperature=0))
        for i in range(24)
    ]
    results = [f.result(timeout=120) for f in futures]
    assert all(r.status_code == 200 for r in results)
    assert {r.body["id"] for r in results} == {f"chatcmpl-conc-{i}" for i in range(24)}


def test_abort_in_flight(host):
    long = ask("Write a very long story about a dragon.", max_tokens=1900, ignore_eos=True)
    chat_future = host.submit(CHAT_MODEL, "long-chat", CHAT, long)
    completion_future = host.submit(
        CHAT_MODEL,
        "long-cmpl",
        COMPLETIONS,
        {"model": CHAT_MODEL, "prompt": ["Once", "Twice"], "max_tokens": 1900, "ignore_eos": True},
    )
    time.sleep(2.0)
    assert not chat_future.done() and not completion_future.done()
    started = time.monotonic()
    host.abort(CHAT_MODEL, ["long-chat", "long-cmpl"])
    chat_r = chat_future.result(timeout=5)
    completion_r = completion_future.result(timeout=5)
    assert time.monotonic() - started < 2.0
    assert chat_r.aborted and completion_r.aborted
    assert chat_r.status_code == 200 and chat_r.body["choices"][0]["finish_reason"] == "abort"
    assert 0 < chat_r.output_tokens < 1900
    assert all(c["finish_reason"] == "abort" for c in completion_r.body["choices"])
    # the engine is still healthy
    assert call(host, CHAT_MODEL, CHAT, ask("What is 2+2?", temperature=0, max_tokens=20)).status_code == 200


# ---- embedding model ----


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings(host):
    assert host.endpoints(EMBED_MODEL) == frozenset({EMBEDDINGS, SCORE, RERANK})
    sentences = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Stock markets fell sharply today."]
    r = call(host, EMBED_MODEL, EMBEDDINGS, {"model": EMBED_MODEL, "input": sentences})
    assert r.status_code == 200, r.body
    assert r.body["object"] == "list" and r.body["id"].startswith("embd-")
    vectors = [d["embedding"] for d in sorted(r.body["data"], key=lambda d: d["index"])]
    assert all(len(v) == 384 for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert r.input_tokens > 0 and r.output_tokens == 0


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_an_embedding_body_is_the_json_vllm_serve_sends(host, encoding_format):
    """The engine keeps vLLM's embedding body rather than rendering it as JSON and parsing it back: the same
    body, float for float, as vLLM's own JSONResponse gives."""
    from starlette.responses import JSONResponse

    from inference.engines.vllm import _EmbeddingBody

    serving = host._slot(EMBED_MODEL).engine.state.serving_embedding
    assert serving.json_response_cls is _EmbeddingBody
    body = {"model": EMBED_MODEL, "input": ["The cat sits.", "word " * 50], "encoding_format": encoding_format}
    ours = call(host, EMBED_MODEL, EMBEDDINGS, body)
    serving.json_response_cls = JSONResponse
    try:
        theirs = call(host, EMBED_MODEL, EMBEDDINGS, body)
    finally:
        serving.json_response_cls = _EmbeddingBody
    assert ours.status_code == theirs.status_code == 200
    assert json.dumps(ours.body["data"]) == json.dumps(theirs.body["data"])
    assert {k: v for k, v in ours.body.items() if k not in ("id", "created")} == {
        k: v for k, v in theirs.body.items() if k not in ("id", "created")
    }


def test_an_embedding_with_no_number_json_can_write_fails_as_vllm_serve_fails_it():
    from inference.engines.vllm import _EmbeddingBody

    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        _EmbeddingBody({"data": [{"index": 0, "object": "embedding", "embedding": [0.5, math.nan]}]})
    assert _EmbeddingBody({"data": [{"embedding": "AAAA"}]}).content == {"data": [{"embedding": "AAAA"}]}


def test_embedding_errors(host):
    assert_error(
        call(host, EMBED_MODEL, EMBEDDINGS, {"model": EMBED_MODEL, "input": "word " * 300}), 400, "input_tokens"
    )
    assert_error(
        call(host, EMBED_MODEL, CHAT, {"model": EMBED_MODEL, "messages": [{"role": "user", "content": "x"}]}),
        400,
        "url",
    )
    assert_error(call(host, EMBED_MODEL, EMBEDDINGS, {"model": EMBED_MODEL}), 400)


def test_score_is_the_cosine_of_the_engines_embeddings(host):
    texts = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Stock markets fell sharply today."]
    embedded = call(host, EMBED_MODEL, EMBEDDINGS, {"model": EMBED_MODEL, "input": texts})
    vectors = [d["embedding"] for d in sorted(embedded.body["data"], key=lambda d: d["index"])]
    one_to_many = call(host, EMBED_MODEL, SCORE, {"model": EMBED_MODEL, "queries": texts[0], "documents": texts[1:]})
    assert one_to_many.status_code == 200, one_to_many.body
    body = one_to_many.body
    assert set(body) == {"id", "object", "created", "model", "data", "usage"}
    assert body["id"].startswith("score-") and body["object"] == "list" and body["model"] == EMBED_MODEL
    assert [(d["index"], d["object"]) for d in body["data"]] == [(0, "score"), (1, "score")]
    for item, document in zip(body["data"], vectors[1:], strict=True):
        assert item["score"] == pytest.approx(cosine(vectors[0], document), abs=1e-4)
    # Each text is encoded once, so the prompt tokens are those of the three embeddings.
    assert one_to_many.input_tokens == body["usage"]["prompt_tokens"] == embedded.input_tokens
    pairs = call(host, EMBED_MODEL, SCORE, {"model": EMBED_MODEL, "text_1": texts[:2], "text_2": texts[1:]})
    assert [d["score"] for d in pairs.body["data"]] == pytest.approx(
        [cosine(vectors[0], vectors[1]), cosine(vectors[1], vectors[2])], abs=1e-4
    )


def test_rerank_and_its_errors(host):
    documents = ["Stock markets fell sharply today.", "A cat is sitting on a rug.", "Kittens sleep a lot."]
    r = call(host, EMBED_MODEL, RERANK, {"model": EMBED_MODEL, "query": "cat", "documents": documents, "top_n": 2})
    assert r.status_code == 200, r.body
    assert set(r.body) == {"id", "model", "usage", "results"} and r.body["id"].startswith("score-")
    assert [result["index"] for result in r.body["results"]] == [1, 2]
    assert r.body["results"][0]["document"] == {"text": documents[1], "multi_modal": None}
    assert r.body["usage"] == {"prompt_tokens": r.input_tokens, "total_tokens": r.input_tokens}
    assert_error(call(host, EMBED_MODEL, RERANK, {"model": EMBED_MODEL, "documents": documents}), 400, "body.query")
    assert_error(
        call(host, EMBED_MODEL, RERANK, {"model": EMBED_MODEL, "query": "x", "documents": documents, "top_n": -1}),
        400,
        "body.top_n",
    )
    too_long = call(host, EMBED_MODEL, RERANK, {"model": EMBED_MODEL, "query": "x", "documents": ["word " * 300]})
    assert_error(too_long, 400, "input_tokens")
    lengths = call(host, EMBED_MODEL, SCORE, {"model": EMBED_MODEL, "queries": ["a", "b", "c"], "documents": ["d"]})
    assert assert_error(lengths, 400)["message"] == "Input lengths must be either 1:1, 1:N or N:N"
    assert_error(call(host, CHAT_MODEL, RERANK, {"model": CHAT_MODEL, "query": "x", "documents": ["y"]}), 400, "url")


def test_abort_a_rerank_in_flight(host):
    documents = [f"Document {i}: " + "many words " * 100 for i in range(400)]
    body = {"model": EMBED_MODEL, "query": "x", "documents": documents}
    future = host.submit(EMBED_MODEL, "long-rerank", RERANK, body)
    engine = host._slot(EMBED_MODEL).engine
    wait = time.monotonic() + 10
    while not engine._engine_ids_for(["long-rerank"]) and time.monotonic() < wait:
        time.sleep(0.05)
    # The engine requests of the rerank are found by our request id, so abort() ends them in the engine.
    assert engine._engine_ids_for(["long-rerank"])[0].startswith("score-long-rerank-")
    started = time.monotonic()
    host.abort(EMBED_MODEL, ["long-rerank"])
    assert future.result(timeout=5).aborted
    assert time.monotonic() - started < 2.0
    assert call(host, EMBED_MODEL, RERANK, {"model": EMBED_MODEL, "query": "x", "documents": ["y"]}).status_code == 200


# ---- processes ----


def test_shutdown_leaves_no_child_process(host):
    engine_pids = host.child_pids()
    watchdogs = [host.watchdog_pid(CHAT_MODEL), host.watchdog_pid(EMBED_MODEL)]
    assert engine_pids and all(watchdogs)
    host.shutdown()
    host.shutdown()  # idempotent
    assert host.loaded_models == []
    deadline = time.monotonic() + 10
    while engine_children(engine_pids + watchdogs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engine_children(engine_pids + watchdogs) == []


def engine_children(known: list[int]) -> list[tuple[int, str]]:
    """Children of this process that belong to an engine: the known pids, vLLM's processes, watchdogs. (In the
    whole suite the test process also runs the server and the task cluster, and keeps multiprocessing's
    resource tracker for them.)"""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(proc.cmdline())
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.pid in known or proc.name().startswith("VLLM") or "spawn_main" in cmdline or "watchdog" in cmdline:
                found.append((proc.pid, proc.name()))
        except psutil.Error:
            continue
    return found
