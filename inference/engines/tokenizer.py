"""The input tokens of request bodies as vLLM counts them (usage.prompt_tokens), without loading vLLM: the model's
own Hugging Face tokenizer (transformers, from the model folder), loaded once per process and kept.

- Chat completions: the messages through the model's chat template as vLLM renders them (its `chat_template`
  engine argument, else the tokenizer's; `add_generation_prompt` on unless the request turns it off; the request's
  `tools`, `documents` and `chat_template_kwargs`), tokenized without special tokens (apply_chat_template's
  `tokenize=True` is exactly that: render, then encode with add_special_tokens=False).
- Completions and embeddings: each prompt or input string encoded with special tokens (vLLM's default); token-id
  prompts count their ids.
- Responses: `instructions` as a system message and `input` as messages, through the chat template.

Message contents given as lists of parts count their text parts joined by newlines (vLLM's "string" content
format); images and audio are not counted. The texts of a whole chunk of requests are encoded in one call (the
tokenizer's batch encoding is about twice as fast as one call per request).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .base import CHAT_COMPLETIONS, COMPLETIONS, EMBEDDINGS, RESPONSES, ModelSpec


@functools.lru_cache(maxsize=16)
def load_tokenizer(path: str, revision: str | None = None, trust_remote_code: bool = False):
    """The tokenizer of a model folder, loaded once per process (a second call is free).

    A folder with a tokenizer.json is read by transformers' own fast tokenizer class (TokenizersBackend, the
    class every fast tokenizer builds on): AutoTokenizer imports torch on its way (380 MB more in each process that
    validates, and 3 s), and for counting a chat the two are the same, the template and tokenizer.json doing all
    the work. A folder without one (or with code of its own) goes through AutoTokenizer."""
    pinned: dict[str, Any] = {"revision": revision} if revision else {}
    if (Path(path) / "tokenizer.json").is_file() and not trust_remote_code:
        try:
            from transformers.tokenization_utils_tokenizers import TokenizersBackend

            return TokenizersBackend.from_pretrained(path, local_files_only=True, **pinned)
        except Exception:  # an older layout this class does not read: AutoTokenizer knows it
            pass
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True, **pinned)


@functools.lru_cache(maxsize=16)
def _template(value: str | None) -> str | None:
    """vLLM's `chat_template` argument: a file's path, or the template itself."""
    if not value:
        return None
    try:
        path = Path(value)
        if path.is_file():
            return path.read_text()
    except OSError:  # a template string too long or odd to be a path
        pass
    return value


def tokenizer_for(spec: ModelSpec):
    args = spec.engine_args or {}
    return load_tokenizer(
        str(args.get("tokenizer") or spec.path),
        args.get("tokenizer_revision") or args.get("revision"),
        bool(args.get("trust_remote_code", False)),
    )


def _text_of(content: Any) -> Any:
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        return "\n".join(text for text in texts if isinstance(text, str))
    return content


def _messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("no messages")
    out = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError("a message without a role")
        out.append({**message, "content": _text_of(message.get("content"))})
    return out


def _responses_messages(body: dict) -> list[dict]:
    messages = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif isinstance(given, list):
        messages.extend(
            {"role": item["role"], "content": _text_of(item.get("content"))}
            for item in given
            if isinstance(item, dict) and isinstance(item.get("role"), str)
        )
    return _messages(messages)


def _render(tokenizer, template: str | None, messages: list[dict], body: dict) -> str:
    kwargs = dict(body.get("chat_template_kwargs") or {})
    continue_final = bool(body.get("continue_final_message", False))
    kwargs["continue_final_message"] = continue_final
    kwargs["add_generation_prompt"] = bool(body.get("add_generation_prompt", True)) and not continue_final
    return tokenizer.apply_chat_template(
        messages,
        tools=body.get("tools") or None,
        documents=body.get("documents") or None,
        chat_template=template,
        tokenize=False,
        **kwargs,
    )


def _prompt(endpoint: str, body: dict, tokenizer, template: str | None) -> tuple[list[str], bool, int]:
    """(texts to encode, with special tokens or not, tokens given as ids) of one request."""
    if endpoint == CHAT_COMPLETIONS:
        text = _render(tokenizer, template, _messages(body.get("messages")), body)
        return [text], bool(body.get("add_special_tokens", False)), 0
    if endpoint == RESPONSES:
        return [_render(tokenizer, template, _responses_messages(body), body)], False, 0
    if endpoint in (COMPLETIONS, EMBEDDINGS):
        value = body.get("prompt" if endpoint == COMPLETIONS else "input")
        special = bool(body.get("add_special_tokens", True))
        if isinstance(value, str):
            return [value], special, 0
        if isinstance(value, list) and value:
            if all(isinstance(v, str) for v in value):
                return list(value), special, 0
            if all(isinstance(v, int) for v in value):
                return [], special, len(value)
            if all(isinstance(v, list) for v in value):
                return [], special, sum(len(v) for v in value)
    raise ValueError("nothing to count")


def count_input_tokens(spec: ModelSpec, endpoint: str, bodies: list[dict]) -> list[int | None]:
    """The prompt tokens of each body (None for a body that vLLM would refuse before counting it)."""
    tokenizer = tokenizer_for(spec)
    template = _template((spec.engine_args or {}).get("chat_template"))
    counts: list[int | None] = [None] * len(bodies)
    pending: dict[bool, list[tuple[int, str]]] = {True: [], False: []}  # special tokens -> (body index, text)
    for index, body in enumerate(bodies):
        try:
            texts, special, ids = _prompt(endpoint, body, tokenizer, template)
        except Exception:  # the engine answers this request with its own 400; nothing to count exactly
            continue
        counts[index] = ids
        pending[special].extend((index, text) for text in texts)
    for special, items in pending.items():
        if items:
            encoded = tokenizer([text for _, text in items], add_special_tokens=special, return_attention_mask=False)
            for (index, _), ids in zip(items, encoded["input_ids"], strict=True):
                counts[index] = (counts[index] or 0) + len(ids)
    return counts
