"""How many input tokens requests hold, by their model's own count: what a batch enqueues against its project's
enqueued-token limit. Counting belongs to the engines (a model's tokenizer and chat template), which live in the
inference app, built on this one: inference registers its counter here (InferenceConfig.ready), as files_api.usage
takes finders from the apps above it."""

from __future__ import annotations

import json
from typing import Protocol


class TokenCounter(Protocol):
    def __call__(self, model: str, endpoint: str, bodies: list[dict]) -> list[int]:
        """The input tokens of each request body (in order), as the model's engine will count them. Never raises
        for a body the engine would refuse: it gets an estimate."""
        ...


_counter: TokenCounter | None = None


def register(counter: TokenCounter) -> None:
    global _counter
    _counter = counter


def estimate(bodies: list[dict]) -> list[int]:
    """About 4 bytes of JSON per token (OpenAI's rule of thumb for English text): for what no tokenizer counts."""
    return [len(json.dumps(body, ensure_ascii=False).encode()) // 4 + 1 for body in bodies]


def count_input_tokens(model: str, endpoint: str, bodies: list[dict]) -> list[int]:
    if _counter is None:
        return estimate(bodies)
    return _counter(model, endpoint, bodies)
