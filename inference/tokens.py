"""The token counter that batches_api's validation uses (batches_api.tokens): each model's engine counts its
requests' input tokens as it will when it runs them. Registered in InferenceConfig.ready."""

from __future__ import annotations

import logging

from django.conf import settings

from batches_api.tokens import estimate
from inference.budget import model_spec
from inference.engines import get_engine_class

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def count_input_tokens(model: str, endpoint: str, bodies: list[dict]) -> list[int]:
    """The input tokens of each body by the model's engine; an estimate (4 bytes of JSON per token) for a body
    the engine cannot count, and for every body when its tokenizer cannot be loaded here (this machine has no
    copy of the model folder, say: the count is then logged once as an estimate)."""
    counts: list[int | None] = [None] * len(bodies)
    if model in settings.BATCHSERVER_MODELS:
        spec = model_spec(model)
        try:
            counts = get_engine_class(spec.engine).count_input_tokens(spec, endpoint, bodies)
        except Exception as exc:
            if model not in _warned:
                _warned.add(model)
                logger.warning(
                    "cannot count the tokens of %s with its tokenizer (%s: %s); enqueued tokens are estimated from "
                    "the requests' size",
                    model,
                    type(exc).__name__,
                    exc,
                )
    guesses = estimate([body for body, count in zip(bodies, counts, strict=True) if count is None])
    guessed = iter(guesses)
    return [count if count is not None else next(guessed) for count in counts]
