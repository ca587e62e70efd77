"""Validation with token counting: a 10,000-line chat file for SmolLM2-135M-Instruct checked line by line by
batches_api.validation.InputValidator, once with the model's tokenizer and chat template counting every line's
input tokens (what the enqueued-token limit needs) and once without, in this process (no server: the validator
reads a file and counts; its database writes are the same either way). The tokenizer's first load is timed apart.

Usage: .venv/bin/python bench/validation.py [--lines 10000]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

from common import CHAT_MODEL, ROOT, chat_lines, to_jsonl


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchserver.settings")
    os.environ.setdefault("BATCHSERVER_DATA_DIR", tempfile.mkdtemp(prefix="bench-validation-"))
    os.environ.setdefault("BATCHSERVER_MODELS_DIR", str(ROOT / "var" / "models"))
    import django

    django.setup()
    from django.conf import settings

    from batches_api.tokens import count_input_tokens
    from batches_api.validation import InputValidator, iter_lines

    data = to_jsonl(chat_lines(args.lines, max_tokens=64))
    started = time.perf_counter()
    count_input_tokens(CHAT_MODEL, "/v1/chat/completions", [{"messages": [{"role": "user", "content": "hi"}]}])
    load = time.perf_counter() - started

    def validate(counting: bool) -> tuple[float, int]:
        validator = InputValidator(
            endpoint="/v1/chat/completions",
            models=settings.BATCHSERVER_MODELS,
            max_requests=max(args.lines, 50_000),
            count_tokens=count_input_tokens if counting else None,
        )
        started = time.perf_counter()
        for number, offset, raw in iter_lines(io.BytesIO(data)):
            validator.check(number, offset, raw)
        result = validator.finish()
        assert result.error_count == 0 and result.total == args.lines, result.errors[:3]
        return time.perf_counter() - started, result.input_tokens

    plain, _ = validate(False)
    counted, tokens = validate(True)
    print(f"{args.lines:,} lines, {len(data) / 1e6:.1f} MB; tokenizer first load {load:.2f} s")
    print(f"without counting: {plain:.2f} s ({args.lines / plain:,.0f} lines/s)")
    print(
        f"with counting:    {counted:.2f} s ({args.lines / counted:,.0f} lines/s, {tokens:,} input tokens, "
        f"{tokens / counted:,.0f} tokens/s; counting alone {tokens / max(counted - plain, 1e-9):,.0f} tokens/s)"
    )


if __name__ == "__main__":
    main()
