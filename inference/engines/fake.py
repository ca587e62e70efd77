"""FakeEngine: a deterministic TEST engine with no model weights ("fake" factory key).

It serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/score and /v1/rerank with
bodies shaped like vLLM's (same keys, same error bodies), so the batch state machine can be
unit-tested and the queue benchmarked without loading a model. It is not a language model: the
text it returns is a deterministic word salad derived from the prompt, its embeddings are
pseudo-random unit vectors seeded by the text, and it scores a pair by their cosine similarity (as
vLLM scores with an embedding model). Of these endpoints it serves those its spec names.

Tokens are whitespace-separated words. engine_args (all optional):

* ``seconds_per_token`` (float, 0): delay per output token, to make requests slow;
* ``load_seconds`` (float, 0): delay of ``load()``;
* ``max_model_len`` (int, 2048): prompt tokens + max_tokens limit (a longer prompt is a 400);
* ``default_max_tokens`` (int, 16): length of a reply when max_tokens is not given
  (the reply then ends with finish_reason "stop"; when max_tokens cuts it, "length");
* ``embedding_dim`` (int, 384);
* ``max_num_seqs`` (int, unlimited): at most this many requests generate at once;
* ``raise_on`` (str): a prompt containing this text makes process() raise RuntimeError
  (simulates an internal engine failure);
* ``crash_on`` (str): a request whose body contains this text kills the process hosting the
  engine with SIGKILL once it has run for a moment (simulates a request that makes the engine
  run out of memory or segfault);
* ``die_on`` (str): a request whose body contains this text kills the engine itself once it has
  run for a moment: every request in flight and every later one fails, and is_dead() says so
  (simulates vLLM's engine core process dying under the worker).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import signal
import time
from collections.abc import Coroutine
from typing import Any

from .base import (
    CHAT_COMPLETIONS,
    COMPLETIONS,
    EMBEDDINGS,
    RERANK,
    SCORE,
    Engine,
    EngineResponse,
    ModelSpec,
    error_response,
    served_endpoints,
    streaming_not_supported,
    success_response,
    unsupported_endpoint,
)

FAKE_FINGERPRINT = "fake-engine"
FAKE_ENDPOINTS = frozenset({CHAT_COMPLETIONS, COMPLETIONS, EMBEDDINGS, SCORE, RERANK})
# The pairs of fields a score request may give its two sides in, in the order vLLM tries them.
SCORE_FIELDS = (("queries", "documents"), ("queries", "items"), ("data_1", "data_2"), ("text_1", "text_2"))

_WORDS = (
    "the a batch model token answer request engine quick brown fox jumps over lazy dog "
    "queue worker result file line output input data value number small large fast slow "
    "four two plus equals yes no maybe ok done"
).split()


def count_tokens(text: str) -> int:
    return len(text.split())


def chat_prompt(messages: list) -> str:
    """The prompt of a chat: the text of each message's content, one message per line (the engine's "template")."""
    texts = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "\n".join(texts)


def _validation_error(loc: str, type_: str, msg: str, value: Any) -> EngineResponse:
    """A 400 shaped like `vllm serve`'s answer to a body that fails validation."""
    shown = value if isinstance(value, (str, int, float, bool)) or value is None else f"<{type(value).__name__}>"
    detail: dict[str, Any] = {"type": type_, "loc": f"body.{loc}", "msg": msg}
    if type_ != "missing" or value is not None:
        detail["input"] = shown
    message = f"1 validation error:\n  {detail!r}"
    return error_response(message, type="Bad Request", param=f"body.{loc}")


def _words(seed_text: str, count: int, salt: int = 0) -> list[str]:
    """`count` words picked by a hash of the prompt: the same prompt gets the same reply, at little cost (the
    claiming benchmark runs thousands of requests a second through this engine)."""
    picks = hashlib.shake_128(f"{salt}:{seed_text}".encode()).digest(count)
    return [_WORDS[pick % len(_WORDS)] for pick in picks]


def _embedding(text: str, dim: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


async def _all(coroutines) -> list:
    """asyncio.gather, without a task for the common single coroutine (the queue benchmarks run thousands a
    second through this engine)."""
    coroutines = list(coroutines)
    if len(coroutines) == 1:
        return [await coroutines[0]]
    return list(await asyncio.gather(*coroutines))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class FakeEngine(Engine):
    """Deterministic stand-in for VLLMEngine (tests and queue benchmarks only)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        args = dict(spec.engine_args or {})
        self.seconds_per_token = float(args.get("seconds_per_token", 0.0))
        self.max_model_len = int(args.get("max_model_len", 2048))
        self.default_max_tokens = int(args.get("default_max_tokens", 16))
        self.embedding_dim = int(args.get("embedding_dim", 384))
        self.raise_on = args.get("raise_on")
        self.crash_on = args.get("crash_on")
        self.die_on = args.get("die_on")
        self.dead = False
        max_num_seqs = args.get("max_num_seqs")
        self._slots = asyncio.Semaphore(int(max_num_seqs)) if max_num_seqs else None
        self.endpoints = served_endpoints(FAKE_ENDPOINTS, spec)
        self._abort_events: dict[str, asyncio.Event] = {}
        self._closed = False
        self.processed = 0  # requests answered (for tests)

    @classmethod
    async def load(cls, spec: ModelSpec) -> FakeEngine:
        delay = float((spec.engine_args or {}).get("load_seconds", 0.0))
        if delay:
            await asyncio.sleep(delay)
        return cls(spec)

    # ---- helpers ----

    def _check_common(self, body: dict) -> EngineResponse | None:
        if body.get("stream"):
            return streaming_not_supported()
        model = body.get("model")
        if model is not None and model != self.spec.name:
            return error_response(
                f"The model `{model}` does not exist. Valid aliases: {self.spec.name}.",
                status_code=404,
                type="NotFoundError",
                param="model",
            )
        for key in ("max_tokens", "max_completion_tokens", "n"):
            if key in body and body[key] is not None and not _is_int(body[key]):
                value = body[key]
                if isinstance(value, str):
                    return _validation_error(
                        key,
                        "int_parsing",
                        "Input should be a valid integer, unable to parse string as an integer",
                        value,
                    )
                return _validation_error(key, "int_type", "Input should be a valid integer", value)
        return None

    def _max_tokens(self, body: dict, prompt_tokens: int) -> tuple[int | None, EngineResponse | None]:
        requested = body.get("max_completion_tokens")
        if requested is None:
            requested = body.get("max_tokens")
        if prompt_tokens > self.max_model_len:
            return None, error_response(
                f"This model's maximum context length is {self.max_model_len} tokens. However, your "
                f"prompt contains at least {prompt_tokens} input tokens, which exceeds this limit even "
                "without any output tokens. Please reduce the length of the input prompt. "
                f"(parameter=input_tokens, value={prompt_tokens})",
                param="input_tokens",
            )
        if requested is not None and requested < 1:
            return None, error_response(f"max_tokens must be at least 1, got {requested}.", param="max_tokens")
        room = self.max_model_len - prompt_tokens
        if requested is None:
            return max(0, min(self.default_max_tokens, room)), None
        return max(0, min(requested, room)), None

    async def _generate(
        self, request_id: str, prompt: str, max_tokens: int, capped: bool, salt: int
    ) -> tuple[str, int, str, bool]:
        """-> (text, n_tokens, finish_reason, aborted).

        With max_tokens given, the reply is exactly max_tokens long (finish_reason
        "length", like a model that never emits EOS), so benchmarks control output
        length; without, it is default_max_tokens long and ends with "stop"."""
        if capped:
            n_tokens, finish = max_tokens, "length"
        else:
            n_tokens, finish = max_tokens, ("stop" if max_tokens == self.default_max_tokens else "length")
        words = _words(prompt, n_tokens, salt)
        produced = n_tokens
        aborted = False
        if self.seconds_per_token > 0 and n_tokens:
            event = self._abort_events[request_id]
            started = time.monotonic()
            try:
                await asyncio.wait_for(event.wait(), timeout=self.seconds_per_token * n_tokens)
                aborted = True
            except TimeoutError:
                pass
            if aborted:
                produced = min(n_tokens, int((time.monotonic() - started) / self.seconds_per_token))
        elif self._abort_events[request_id].is_set():
            aborted, produced = True, 0
        if aborted:
            finish = "abort"
        return " ".join(words[:produced]), produced, finish, aborted

    def _base(self, request_id: str, prefix: str, obj: str) -> dict:
        return {
            "id": f"{prefix}{request_id}",
            "object": obj,
            "created": int(time.time()),
            "model": self.spec.name,
        }

    @staticmethod
    def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }

    # ---- endpoints ----

    async def _chat(self, request_id: str, body: dict) -> EngineResponse:
        messages = body.get("messages")
        if messages is None:
            return _validation_error("messages", "missing", "Field required", None)
        if not isinstance(messages, list):
            return _validation_error("messages", "list_type", "Input should be a valid list", messages)
        if not messages:
            return error_response("The messages list must not be empty.", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                return _validation_error(f"messages.{i}.role", "missing", "Field required", None)
        prompt = chat_prompt(messages)
        if self.raise_on and self.raise_on in prompt:
            raise RuntimeError(f"fake engine failure (raise_on={self.raise_on!r})")
        prompt_tokens = count_tokens(prompt)
        max_tokens, err = self._max_tokens(body, prompt_tokens)
        if err:
            return err
        assert max_tokens is not None  # _max_tokens gives one or the other
        capped = body.get("max_completion_tokens", body.get("max_tokens")) is not None
        n = body.get("n") or 1
        results = await _all(self._generate(request_id, prompt, max_tokens, capped, salt) for salt in range(n))
        choices = []
        for index, (text, _, finish, _) in enumerate(results):
            choices.append(
                {
                    "index": index,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "annotations": None,
                        "audio": None,
                        "function_call": None,
                        "reasoning": None,
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                    "token_ids": None,
                    "routed_experts": None,
                }
            )
        completion_tokens = sum(r[1] for r in results)
        out = self._base(request_id, "chatcmpl-", "chat.completion")
        out.update(
            {
                "choices": choices,
                "service_tier": None,
                "system_fingerprint": FAKE_FINGERPRINT,
                "usage": self._usage(prompt_tokens, completion_tokens),
                "prompt_logprobs": None,
                "prompt_token_ids": None,
                "prompt_text": None,
                "kv_transfer_params": None,
                "ec_transfer_params": None,
                "metrics": None,
            }
        )
        return success_response(out, aborted=any(r[3] for r in results))

    @staticmethod
    def _prompts(value: Any, field: str) -> list[str] | EngineResponse:
        """str | list[str] | list[int] | list[list[int]] -> prompt texts."""
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value:
            if all(isinstance(v, str) for v in value):
                return list(value)
            if all(_is_int(v) for v in value):
                return [" ".join(str(v) for v in value)]
            if all(isinstance(v, list) and v and all(_is_int(t) for t in v) for v in value):
                return [" ".join(str(t) for t in v) for v in value]
        if value is None:
            return _validation_error(field, "missing", "Field required", None)
        return error_response(f"Invalid {field}: expected a string, a list of strings or token ids.", param=field)

    async def _completion(self, request_id: str, body: dict) -> EngineResponse:
        prompts = self._prompts(body.get("prompt"), "prompt")
        if isinstance(prompts, EngineResponse):
            return prompts
        if self.raise_on and any(self.raise_on in p for p in prompts):
            raise RuntimeError(f"fake engine failure (raise_on={self.raise_on!r})")
        n = body.get("n") or 1
        capped = body.get("max_tokens") is not None
        jobs: list[Coroutine[Any, Any, tuple[str, int, str, bool]]] = []
        prompt_tokens = 0
        for prompt in prompts:
            tokens = count_tokens(prompt)
            prompt_tokens += tokens
            max_tokens, err = self._max_tokens(body, tokens)
            if err:
                return err
            assert max_tokens is not None  # _max_tokens gives one or the other
            jobs.extend(self._generate(request_id, prompt, max_tokens, capped, salt) for salt in range(n))
        results = await _all(jobs)
        choices = [
            {
                "index": index,
                "text": text,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
                "token_ids": None,
                "prompt_logprobs": None,
                "prompt_token_ids": None,
                "routed_experts": None,
            }
            for index, (text, _, finish, _) in enumerate(results)
        ]
        out = self._base(request_id, "cmpl-", "text_completion")
        out.update(
            {
                "choices": choices,
                "service_tier": None,
                "system_fingerprint": FAKE_FINGERPRINT,
                "usage": self._usage(prompt_tokens, sum(r[1] for r in results)),
                "kv_transfer_params": None,
                "ec_transfer_params": None,
                "metrics": None,
            }
        )
        return success_response(out, aborted=any(r[3] for r in results))

    async def _embedding(self, request_id: str, body: dict) -> EngineResponse:
        inputs = self._prompts(body.get("input"), "input")
        if isinstance(inputs, EngineResponse):
            return inputs
        if body.get("encoding_format") not in (None, "float"):
            return error_response("The fake engine only returns encoding_format 'float'.", param="encoding_format")
        prompt_tokens = 0
        data = []
        for index, text in enumerate(inputs):
            tokens = count_tokens(text)
            if tokens > self.max_model_len:
                return error_response(
                    f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                    f"requested {tokens} tokens in the input for embedding generation. Please reduce the "
                    "length of the input.",
                    param="input_tokens",
                )
            prompt_tokens += tokens
            data.append({"index": index, "object": "embedding", "embedding": _embedding(text, self.embedding_dim)})
        await self._pause(request_id)
        out = self._base(request_id, "embd-", "list")
        out.update({"data": data, "usage": self._usage(prompt_tokens, 0)})
        return success_response(out, aborted=self._abort_events[request_id].is_set())

    async def _pause(self, request_id: str) -> None:
        """An encoding request takes seconds_per_token in all (or until it is aborted)."""
        if self.seconds_per_token > 0:
            try:
                await asyncio.wait_for(self._abort_events[request_id].wait(), timeout=self.seconds_per_token)
            except TimeoutError:
                pass

    @staticmethod
    def _side(value: Any, field: str, *, many: bool = True) -> list[str] | EngineResponse:
        """One side of a score or rerank request (vLLM's ScoreInput, or a list of them when ``many``) -> its
        texts."""
        items = value if many and isinstance(value, list) else [value]
        texts = []
        for item in items:
            if isinstance(item, dict) and "content" in item:
                return error_response("MultiModalParam is not supported for FakeEngine")
            if not isinstance(item, str):
                return _validation_error(field, "string_type", "Input should be a valid string", value)
            texts.append(item)
        return texts

    async def _pair_scores(
        self, request_id: str, queries: list[str], documents: list[str]
    ) -> tuple[list[float], int] | EngineResponse:
        """The scores of a 1:N or N:N pairing, as vLLM scores with an embedding model (the cosine similarity of
        the two embeddings), and the prompt tokens (each text encoded once)."""
        if len(queries) > 1 and len(queries) != len(documents):
            return error_response("Input lengths must be either 1:1, 1:N or N:N")
        if not queries:
            return error_response("At least one text element must be given")
        if not documents:
            return error_response("At least one text_pair element must be given")
        prompt_tokens = 0
        for text in queries + documents:
            tokens = count_tokens(text)
            if tokens > self.max_model_len:
                return error_response(
                    f"This model's maximum context length is {self.max_model_len} tokens. However, your prompt "
                    f"contains at least {tokens} input tokens, which exceeds this limit even without any output "
                    f"tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value={tokens})",
                    param="input_tokens",
                )
            prompt_tokens += tokens
        vectors = {text: _embedding(text, self.embedding_dim) for text in {*queries, *documents}}
        pairs = zip(queries * len(documents) if len(queries) == 1 else queries, documents, strict=True)
        scores = [math.fsum(a * b for a, b in zip(vectors[q], vectors[d], strict=True)) for q, d in pairs]
        await self._pause(request_id)
        return scores, prompt_tokens

    async def _score(self, request_id: str, body: dict) -> EngineResponse:
        fields = next(((a, b) for a, b in SCORE_FIELDS if a in body and b in body), None)
        if fields is None:
            missing = "documents" if "queries" in body else "queries"
            return _validation_error(missing, "missing", "Field required", None)
        first, second = (self._side(body[name], name) for name in fields)
        if isinstance(first, EngineResponse):
            return first
        if isinstance(second, EngineResponse):
            return second
        scored = await self._pair_scores(request_id, first, second)
        if isinstance(scored, EngineResponse):
            return scored
        scores, prompt_tokens = scored
        out = self._base(request_id, "score-", "list")
        out.update(
            {
                "data": [{"index": index, "object": "score", "score": score} for index, score in enumerate(scores)],
                "usage": self._usage(prompt_tokens, 0),
            }
        )
        return success_response(out, aborted=self._abort_events[request_id].is_set())

    async def _rerank(self, request_id: str, body: dict) -> EngineResponse:
        for name in ("query", "documents"):
            if name not in body:
                return _validation_error(name, "missing", "Field required", None)
        top_n = body.get("top_n", 0)
        if not _is_int(top_n):
            return _validation_error("top_n", "int_type", "Input should be a valid integer", top_n)
        if top_n < 0:
            return _validation_error("top_n", "greater_than_equal", "Input should be greater than or equal to 0", top_n)
        query = self._side(body["query"], "query", many=False)
        if isinstance(query, EngineResponse):
            return query
        documents = self._side(body["documents"], "documents")
        if isinstance(documents, EngineResponse):
            return documents
        scored = await self._pair_scores(request_id, query, documents)
        if isinstance(scored, EngineResponse):
            return scored
        scores, prompt_tokens = scored
        # By relevance, highest first (a stable sort, as vLLM's).
        ranked = sorted(enumerate(zip(documents, scores, strict=True)), key=lambda item: item[1][1], reverse=True)
        results = [
            {"index": index, "document": {"text": text, "multi_modal": None}, "relevance_score": score}
            for index, (text, score) in ranked
        ]
        if 0 < top_n < len(results):
            results = results[:top_n]
        out = {
            "id": f"score-{request_id}",
            "model": self.spec.name,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            "results": results,
        }
        return success_response(out, aborted=self._abort_events[request_id].is_set())

    # ---- Engine API ----

    @classmethod
    def count_input_tokens(cls, spec: ModelSpec, endpoint: str, bodies: list[dict]) -> list[int | None]:
        """Whitespace-separated words, as usage.prompt_tokens counts them."""
        return [cls._input_tokens(endpoint, body) for body in bodies]

    @classmethod
    def _input_tokens(cls, endpoint: str, body: dict) -> int | None:
        if endpoint == CHAT_COMPLETIONS:
            messages = body.get("messages")
            return count_tokens(chat_prompt(messages)) if isinstance(messages, list) else None
        if endpoint in (COMPLETIONS, EMBEDDINGS):
            prompts = cls._prompts(body.get("prompt" if endpoint == COMPLETIONS else "input"), "prompt")
            return None if isinstance(prompts, EngineResponse) else sum(count_tokens(p) for p in prompts)
        return None

    def is_dead(self) -> bool:
        return self.dead

    async def process(self, request_id: str, endpoint: str, body: dict, priority: int = 0) -> EngineResponse:
        if self._closed:
            raise RuntimeError("engine is shut down")
        if self.dead:
            raise RuntimeError("the engine is dead")
        if endpoint not in self.endpoints:
            return unsupported_endpoint(endpoint, self.endpoints, self.spec.name)
        if not isinstance(body, dict):
            return error_response("The request body must be a JSON object.", param="body")
        err = self._check_common(body)
        if err is not None:
            return err
        if self.crash_on and self.crash_on in json.dumps(body):
            await asyncio.sleep(0.2)  # long enough for the requests fed with it to be in flight too
            os.kill(os.getpid(), signal.SIGKILL)
        if self.die_on and self.die_on in json.dumps(body):
            await asyncio.sleep(0.2)
            self.dead = True
            for other in self._abort_events.values():
                other.set()  # the others in flight end now, and fail below
            raise RuntimeError(f"fake engine died (die_on={self.die_on!r})")
        if request_id in self._abort_events:
            raise ValueError(f"request id {request_id!r} is already in flight")
        self._abort_events[request_id] = asyncio.Event()
        try:
            if self._slots is not None:
                await self._slots.acquire()
            try:
                if endpoint == CHAT_COMPLETIONS:
                    response = await self._chat(request_id, body)
                elif endpoint == COMPLETIONS:
                    response = await self._completion(request_id, body)
                elif endpoint == SCORE:
                    response = await self._score(request_id, body)
                elif endpoint == RERANK:
                    response = await self._rerank(request_id, body)
                else:
                    response = await self._embedding(request_id, body)
            finally:
                if self._slots is not None:
                    self._slots.release()
        finally:
            event = self._abort_events.pop(request_id, None)
        if self.dead:  # like a dead vLLM engine: whatever was in flight fails with it
            raise RuntimeError("the engine died while this request was in flight")
        if event is not None and event.is_set():
            response.aborted = True
        self.processed += 1
        return response

    async def abort(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            event = self._abort_events.get(rid)
            if event is not None:
                event.set()

    async def shutdown(self) -> None:
        self._closed = True
        for event in self._abort_events.values():
            event.set()
