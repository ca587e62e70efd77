"""The token counter that batches_api's validation uses (batches_api.tokens): each model's engine counts its
requests' input tokens as it will when it runs them. Registered in InferenceConfig.ready."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

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


# A request of each endpoint to count once at start: what loads a model's tokenizer and compiles its chat template.
_SAMPLES: dict[str, dict] = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "Hello."}]},
    "/v1/responses": {"input": "Hello."},
    "/v1/completions": {"prompt": "Hello."},
    "/v1/embeddings": {"input": "Hello."},
}


def warm_up() -> None:
    """Count a small request of each endpoint of every configured model whose folder is on this machine: its
    tokenizer is loaded and its chat template compiled before the first batch is validated, rather than while it
    is (about 2 s for a small model: transformers' import, tokenizer.json, the template)."""
    started = time.monotonic()
    warmed = []
    for model, config in settings.BATCHSERVER_MODELS.items():
        if not Path(config["path"]).is_dir():
            continue
        for endpoint in [e for e in config["endpoints"] if e in _SAMPLES]:
            count_input_tokens(model, endpoint, [_SAMPLES[endpoint]])
        warmed.append(model)
    if warmed:
        logger.info("token counting ready for %s in %.1f s", ", ".join(warmed), time.monotonic() - started)


def warm_up_in_background() -> None:
    """warm_up on a thread of its own: a process answers at once, and counts without delay soon after."""

    def run() -> None:
        try:
            warm_up()
        except Exception:  # the first validation loads what it needs instead
            logger.warning("warming up token counting failed", exc_info=True)

    threading.Thread(target=run, name="token-counting-warm-up", daemon=True).start()
