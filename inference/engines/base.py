"""The engine interface: one loaded model that turns OpenAI request bodies into response bodies.

Plain Python (no Django); configuration comes in as a ``ModelSpec``.
An ``Engine`` lives on one asyncio event loop (``EngineHost`` runs that loop in a background
thread of the worker process). ``process`` is called concurrently for many requests at once;
the engine batches them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, TypedDict

CHAT_COMPLETIONS = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
# vLLM's score and rerank APIs (`vllm serve` also answers them at /score, /rerank and /v2/rerank).
SCORE = "/v1/score"
RERANK = "/v1/rerank"

# The endpoints a model serves unless its settings name them: a generative model (vLLM's "generate"
# runner) answers the first, a pooling model (runner "pooling": embedding models, which score by the
# cosine similarity of their embeddings) the second.
GENERATIVE_ENDPOINTS = (CHAT_COMPLETIONS, COMPLETIONS, RESPONSES)
POOLING_ENDPOINTS = (EMBEDDINGS, SCORE, RERANK)
ENDPOINTS = GENERATIVE_ENDPOINTS + POOLING_ENDPOINTS


def default_endpoints(engine_args: dict[str, Any]) -> list[str]:
    """The endpoints of a model whose settings do not list them, from its engine arguments."""
    return list(POOLING_ENDPOINTS if engine_args.get("runner") == "pooling" else GENERATIVE_ENDPOINTS)


@dataclass
class ModelSpec:
    """One served model, from configuration."""

    name: str  # served model name, e.g. "SmolLM2-135M-Instruct" (what request bodies put in "model")
    path: str  # local folder
    engine: str = "vllm"  # factory key: "vllm" or "fake"
    # For "vllm": keyword arguments of vLLM's AsyncEngineArgs (max_model_len, dtype,
    # enforce_eager, gpu_memory_utilization, tensor_parallel_size, runner="pooling", ...);
    # options of vLLM's OpenAI frontend (the `vllm serve` flags such as chat_template,
    # enable_auto_tool_choice, tool_call_parser, enable_prompt_tokens_details) are accepted
    # in the same dict. For "fake": see FakeEngine.
    engine_args: dict[str, Any] = field(default_factory=dict)
    # The endpoints the model's settings say it serves (the one list the API validates batches against); an
    # engine serves those of them it can. None: every endpoint the engine can serve.
    endpoints: frozenset[str] | None = None


class Usage(TypedDict):
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int


@dataclass
class EngineResponse:
    status_code: int  # 200, or the 4xx (rarely 5xx) that `vllm serve` would have returned
    body: dict  # exactly the JSON body `vllm serve` would return (success or {"error": {...}})
    input_tokens: int = 0  # usage.prompt_tokens / input_tokens; 0 for errors
    output_tokens: int = 0  # usage.completion_tokens / output_tokens (0 for embeddings)
    cached_tokens: int = 0  # usage.prompt_tokens_details.cached_tokens if present
    reasoning_tokens: int = 0  # usage.completion_tokens_details.reasoning_tokens if present
    # True when abort() ended this request: the body is then a partial result
    # (finish_reason "abort") or an error, and the request should not count as done.
    aborted: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def usage(self) -> Usage:
        """Its token counts, by name."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


def served_endpoints(available: frozenset[str], spec: ModelSpec) -> frozenset[str]:
    """What an engine able to serve ``available`` serves for ``spec``: those its settings name."""
    return available if spec.endpoints is None else available & spec.endpoints


def engine_error_body(
    message: str,
    *,
    type: str = "BadRequestError",
    code: int = 400,
    param: str | None = None,
) -> dict:
    """An error body shaped like vLLM's ``ErrorResponse`` (``{"error": {...}}``)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(
    message: str,
    *,
    status_code: int = 400,
    type: str = "BadRequestError",
    param: str | None = None,
    aborted: bool = False,
) -> EngineResponse:
    return EngineResponse(
        status_code=status_code,
        body=engine_error_body(message, type=type, code=status_code, param=param),
        aborted=aborted,
    )


def usage_counts(body: dict) -> Usage:
    """Token counts from an OpenAI response body's ``usage`` (chat, completions,
    embeddings and responses spell them differently)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "reasoning_tokens": 0}

    def _int(value: Any) -> int:
        return value if isinstance(value, int) else 0

    input_tokens = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    output_tokens = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    in_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": _int(in_details.get("cached_tokens")) if isinstance(in_details, dict) else 0,
        "reasoning_tokens": _int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0,
    }


def success_response(body: dict, *, status_code: int = 200, aborted: bool = False) -> EngineResponse:
    return EngineResponse(status_code=status_code, body=body, aborted=aborted, **usage_counts(body))


def unsupported_endpoint(endpoint: str, endpoints: frozenset[str], model: str) -> EngineResponse:
    served = ", ".join(sorted(endpoints)) or "none"
    return error_response(
        f"The model {model!r} does not serve {endpoint}; it serves: {served}.",
        param="url",
    )


def streaming_not_supported() -> EngineResponse:
    return error_response('Streaming is not supported in batches: remove "stream" or set it to false.', param="stream")


class Engine(ABC):
    """One loaded model on an asyncio loop."""

    # Which of ENDPOINTS this engine serves: those of spec.endpoints it can serve.
    endpoints: frozenset[str] = frozenset()
    spec: ModelSpec
    # Whether loading it starts processes of its own: a watchdog then follows the load (see EngineHost).
    starts_processes: bool = False

    @classmethod
    @abstractmethod
    async def load(cls, spec: ModelSpec) -> Engine:
        """Load the model (slow: seconds to minutes) and return a ready engine."""

    @abstractmethod
    async def process(self, request_id: str, endpoint: str, body: dict, priority: int = 0) -> EngineResponse:
        """Run one request. Never raises for a bad request: bad input gives a 4xx
        EngineResponse with an OpenAI error body; an unsupported endpoint a 400 naming the
        endpoints served. Raises only when the engine itself failed (e.g. it died).
        `priority`: lower runs earlier, for an engine that schedules by priority (others ignore it)."""

    @abstractmethod
    async def abort(self, request_ids: list[str]) -> None:
        """End these in-flight requests promptly; their process() calls return
        (with ``aborted=True``). Unknown or finished ids are ignored."""

    @abstractmethod
    async def shutdown(self) -> None:
        """Stop the engine and release its processes and memory. Idempotent."""

    def child_pids(self) -> list[int]:
        """Pids of the engine processes this engine started (watched by the watchdog)."""
        return []

    @classmethod
    def count_input_tokens(cls, spec: ModelSpec, endpoint: str, bodies: list[dict]) -> list[int | None]:
        """The input tokens of each request body, as this engine will count them (its usage.prompt_tokens),
        without loading the model: a validation job calls it in a process that runs no engine. None for a body it
        cannot count (one the engine will refuse, say), or for every body when it does not count at all (this
        default): the caller estimates those."""
        return [None] * len(bodies)

    def is_dead(self) -> bool:
        """True when the engine cannot serve any more (its processes died): it must be loaded again."""
        return False
