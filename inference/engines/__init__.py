"""Inference engines: one interface (base.Engine), picked by ``ModelSpec.engine``.

``get_engine_class("vllm")`` imports vLLM only when asked, so the fake engine (and
everything that only needs the interface) works where vLLM is not importable.
"""

from __future__ import annotations

import importlib

from .base import Engine, EngineResponse, ModelSpec

# factory key -> "module:ClassName" (imported lazily)
ENGINE_CLASSES: dict[str, str] = {
    "vllm": "inference.engines.vllm:VLLMEngine",
    "fake": "inference.engines.fake:FakeEngine",
}


def get_engine_class(name: str) -> type[Engine]:
    """The Engine class for a factory key (``ModelSpec.engine``): "vllm" or "fake".

    A dotted "package.module:ClassName" (or "package.module.ClassName") is accepted too,
    for engines living outside this package.
    """
    target = ENGINE_CLASSES.get(name, name)
    if ":" in target:
        module_name, _, class_name = target.partition(":")
    elif "." in target:
        module_name, _, class_name = target.rpartition(".")
    else:
        raise ValueError(f"Unknown engine {name!r}; known: {', '.join(sorted(ENGINE_CLASSES))}")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise TypeError(f"{target} is not an Engine subclass")
    return cls


__all__ = ["Engine", "EngineResponse", "ModelSpec", "get_engine_class", "ENGINE_CLASSES"]
