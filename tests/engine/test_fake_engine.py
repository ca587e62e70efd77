"""The fake engine through EngineHost: response shapes, max_tokens, 400s, abort.

Plain pytest (no Django, no database, no vLLM)."""

from __future__ import annotations

import concurrent.futures
import math
import time

import pytest

from inference.engines import get_engine_class
from inference.engines.base import EngineResponse, ModelSpec
from inference.engines.fake import FakeEngine
from inference.engines.host import EngineHost

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
SCORE = "/v1/score"
RERANK = "/v1/rerank"

MODEL = "fake-model"


@pytest.fixture(scope="module")
def host():
    host = EngineHost()
    host.ensure_loaded(ModelSpec(name=MODEL, path="unused", engine="fake", engine_args={"max_model_len": 64}))
    yield host
    host.shutdown()


def run(host: EngineHost, endpoint: str, body: dict, request_id: str | None = None) -> EngineResponse:
    run.counter += 1
    return host.submit(MODEL, request_id or f"req-{run.counter}", endpoint, body).result(timeout=10)


run.counter = 0


def test_factory_picks_fake_engine():
    assert get_engine_class("fake") is FakeEngine


def test_ensure_loaded_is_idempotent(host):
    assert host.loaded_models == [MODEL]
    assert (
        host.ensure_loaded(ModelSpec(name=MODEL, path="unused", engine="fake", engine_args={"max_model_len": 64}))
        is False
    )
    assert host.child_pids() == []  # in-process engine: nothing to watch
    assert host.watchdog_pid(MODEL) is None


def test_chat_shape_and_usage(host):
    r = run(
        host, CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "What is two plus two"}], "max_tokens": 5}
    )
    assert r.status_code == 200 and r.ok and not r.aborted
    body = r.body
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 5
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    assert (r.input_tokens, r.output_tokens) == (5, 5)


def test_chat_is_deterministic_and_default_length(host):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}
    a, b = run(host, CHAT, body), run(host, CHAT, body)
    assert a.body["choices"][0]["message"]["content"] == b.body["choices"][0]["message"]["content"]
    assert a.body["choices"][0]["finish_reason"] == "stop"
    assert a.output_tokens == 16


def test_chat_n_choices(host):
    r = run(host, CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "n": 3})
    assert [c["index"] for c in r.body["choices"]] == [0, 1, 2]
    assert r.output_tokens == 9


def test_completions_shape(host):
    r = run(host, COMPLETIONS, {"model": MODEL, "prompt": ["one two", "three"], "max_tokens": 4})
    assert r.status_code == 200
    assert r.body["object"] == "text_completion"
    assert r.body["id"].startswith("cmpl-")
    assert [c["index"] for c in r.body["choices"]] == [0, 1]
    assert all(len(c["text"].split()) == 4 for c in r.body["choices"])
    assert r.input_tokens == 3 and r.output_tokens == 8


def test_embeddings_shape(host):
    r = run(host, EMBEDDINGS, {"model": MODEL, "input": ["a b c", "d e"]})
    assert r.status_code == 200
    assert r.body["object"] == "list"
    assert [d["index"] for d in r.body["data"]] == [0, 1]
    vec = r.body["data"][0]["embedding"]
    assert len(vec) == 384
    assert math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-6)
    assert r.input_tokens == 5 and r.output_tokens == 0
    assert r.body["usage"]["total_tokens"] == 5


def embedding(host: EngineHost, text: str) -> list[float]:
    return run(host, EMBEDDINGS, {"model": MODEL, "input": text}).body["data"][0]["embedding"]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_score_is_the_cosine_of_the_embeddings(host):
    r = run(host, SCORE, {"model": MODEL, "queries": "a cat", "documents": ["a cat sits", "stocks fell", "a cat"]})
    assert r.status_code == 200, r.body
    assert set(r.body) == {"id", "object", "created", "model", "data", "usage"}
    assert r.body["id"].startswith("score-") and r.body["object"] == "list" and r.body["model"] == MODEL
    query = embedding(host, "a cat")
    for item, document in zip(r.body["data"], ["a cat sits", "stocks fell", "a cat"], strict=True):
        assert set(item) == {"index", "object", "score"} and item["object"] == "score"
        assert math.isclose(item["score"], cosine(query, embedding(host, document)), abs_tol=1e-9)
    assert r.body["data"][2]["score"] == pytest.approx(1.0)
    # Each text is encoded once: 2 + 3 + 2 + 2 words.
    assert r.input_tokens == 9 and r.output_tokens == 0
    assert r.body["usage"] == {
        "prompt_tokens": 9,
        "total_tokens": 9,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    # N:N pairs, under each of the names vLLM accepts.
    for first, second in (("text_1", "text_2"), ("data_1", "data_2"), ("queries", "items")):
        pairs = run(host, SCORE, {"model": MODEL, first: ["a cat", "dogs"], second: ["a cat", "stocks fell"]})
        assert pairs.status_code == 200, pairs.body
        assert pairs.body["data"][0]["score"] == pytest.approx(1.0)
        assert math.isclose(
            pairs.body["data"][1]["score"],
            cosine(embedding(host, "dogs"), embedding(host, "stocks fell")),
            abs_tol=1e-9,
        )


def test_rerank_sorts_by_relevance_and_keeps_top_n(host):
    documents = [f"doc {i} {'cat ' * (i % 3)}" for i in range(7)]
    full = run(host, RERANK, {"model": MODEL, "query": "cat", "documents": documents})
    assert full.status_code == 200, full.body
    assert set(full.body) == {"id", "model", "usage", "results"} and full.body["id"].startswith("score-")
    results = full.body["results"]
    assert sorted(r["index"] for r in results) == list(range(7))
    assert [r["relevance_score"] for r in results] == sorted((r["relevance_score"] for r in results), reverse=True)
    query = embedding(host, "cat")
    for result in results:
        assert result["document"] == {"text": documents[result["index"]], "multi_modal": None}
        expected = cosine(query, embedding(host, documents[result["index"]]))
        assert math.isclose(result["relevance_score"], expected, abs_tol=1e-9)
    assert full.body["usage"] == {"prompt_tokens": full.input_tokens, "total_tokens": full.input_tokens}
    assert full.input_tokens == 1 + sum(len(d.split()) for d in documents)
    top = run(host, RERANK, {"model": MODEL, "query": "cat", "documents": documents, "top_n": 3})
    assert top.body["results"] == results[:3]
    assert (
        run(host, RERANK, {"model": MODEL, "query": "cat", "documents": documents, "top_n": 70}).body["results"]
        == results
    )


@pytest.mark.parametrize(
    "endpoint,body,status,param",
    [
        (CHAT, {"model": MODEL}, 400, "body.messages"),
        (
            CHAT,
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"},
            400,
            "body.max_tokens",
        ),
        (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "word " * 65}]}, 400, "input_tokens"),
        (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}, 400, "stream"),
        (CHAT, {"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        (COMPLETIONS, {"model": MODEL}, 400, "body.prompt"),
        ("/v1/responses", {"model": MODEL, "input": "x"}, 400, "url"),
        (SCORE, {"model": MODEL, "queries": "x"}, 400, "body.documents"),
        (SCORE, {"model": MODEL, "queries": ["a", "b", "c"], "documents": ["a", "b"]}, 400, None),
        (SCORE, {"model": MODEL, "queries": "a", "documents": []}, 400, None),
        (SCORE, {"model": MODEL, "queries": "a", "documents": ["word " * 65]}, 400, "input_tokens"),
        (RERANK, {"model": MODEL, "documents": ["a"]}, 400, "body.query"),
        (RERANK, {"model": MODEL, "query": ["a", "b"], "documents": ["a"]}, 400, "body.query"),
        (RERANK, {"model": MODEL, "query": "a", "documents": ["a"], "top_n": -1}, 400, "body.top_n"),
        (RERANK, {"model": MODEL, "query": "a", "documents": [1]}, 400, "body.documents"),
    ],
)
def test_bad_requests_are_error_responses(host, endpoint, body, status, param):
    r = run(host, endpoint, body)
    assert r.status_code == status
    error = r.body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status and error["param"] == param and error["message"]
    assert r.input_tokens == 0 and r.output_tokens == 0


def test_unsupported_endpoint_names_served_ones(host):
    r = run(host, "/v1/responses", {"model": MODEL, "input": "x"})
    assert "/v1/chat/completions" in r.body["error"]["message"]


def test_serves_the_endpoints_its_spec_names():
    host = EngineHost()
    try:
        spec = ModelSpec(name=MODEL, path="x", engine="fake", endpoints=frozenset({EMBEDDINGS, "/v1/responses"}))
        host.ensure_loaded(spec)
        assert host.endpoints(MODEL) == frozenset({EMBEDDINGS})  # the fake engine cannot answer /v1/responses
        r = host.submit(MODEL, "r", RERANK, {"model": MODEL, "query": "a", "documents": ["b"]}).result(timeout=10)
        assert r.status_code == 400 and r.body["error"]["param"] == "url"
        assert "it serves: /v1/embeddings" in r.body["error"]["message"]
    finally:
        host.shutdown()


def test_abort_pending_requests():
    host = EngineHost()
    try:
        host.ensure_loaded(ModelSpec(name=MODEL, path="x", engine="fake", engine_args={"seconds_per_token": 0.05}))
        body = {"model": MODEL, "messages": [{"role": "user", "content": "slow"}], "max_tokens": 200}  # 10 s each
        futures = {f"slow-{i}": host.submit(MODEL, f"slow-{i}", CHAT, body) for i in range(20)}
        quick = host.submit(MODEL, "quick", CHAT, {**body, "max_tokens": 2})
        assert quick.result(timeout=5).body["choices"][0]["finish_reason"] == "length"
        time.sleep(0.3)
        started = time.monotonic()
        host.abort(MODEL, list(futures))
        results = [f.result(timeout=3) for f in futures.values()]
        assert time.monotonic() - started < 2
        for r in results:
            assert r.aborted and r.status_code == 200
            assert r.body["choices"][0]["finish_reason"] == "abort"
            assert r.output_tokens < 200
        host.abort(MODEL, ["unknown-id"])  # unknown ids are ignored
    finally:
        host.shutdown()


def test_concurrent_requests_overlap():
    host = EngineHost()
    try:
        host.ensure_loaded(ModelSpec(name=MODEL, path="x", engine="fake", engine_args={"seconds_per_token": 0.01}))
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}  # 0.5 s each
        started = time.monotonic()
        futures = [host.submit(MODEL, f"c-{i}", CHAT, body) for i in range(200)]
        done, _ = concurrent.futures.wait(futures, timeout=10)
        assert len(done) == 200 and all(f.result().status_code == 200 for f in futures)
        assert time.monotonic() - started < 3  # concurrent, not 100 s in series
    finally:
        host.shutdown()


def test_models_load_side_by_side_and_shutdown_is_idempotent():
    host = EngineHost()
    assert host.ensure_loaded(ModelSpec(name="a", path="x", engine="fake")) is True
    assert host.ensure_loaded(ModelSpec(name="b", path="x", engine="fake")) is True
    assert host.loaded_models == ["a", "b"]
    assert host.load_seconds("b") is not None
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    both = [host.submit(model, f"{model}-1", CHAT, chat) for model in ("a", "b")]  # served at once
    assert [f.result(timeout=5).body["model"] for f in both] == ["a", "b"]
    host.unload("a")
    assert host.loaded_models == ["b"]
    with pytest.raises(RuntimeError):
        host.submit("a", "x", CHAT, {})
    host.shutdown()
    host.shutdown()
    assert host.loaded_models == []
    # usable again after shutdown
    assert host.ensure_loaded(ModelSpec(name="c", path="x", engine="fake")) is True
    assert host.submit("c", "c-1", CHAT, chat).result(timeout=5).status_code == 200
    host.shutdown()


def test_internal_failure_raises():
    host = EngineHost()
    try:
        host.ensure_loaded(ModelSpec(name=MODEL, path="x", engine="fake", engine_args={"raise_on": "BOOM"}))
        with pytest.raises(RuntimeError):
            host.submit(MODEL, "boom", CHAT, {"messages": [{"role": "user", "content": "BOOM"}]}).result(timeout=5)
        assert run(host, CHAT, {"messages": [{"role": "user", "content": "fine"}]}).status_code == 200
    finally:
        host.shutdown()
