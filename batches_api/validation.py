"""Validation of a batch input file: one streaming pass, memory flat in file size."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_ERRORS = 100  # errors kept on the batch; counting goes on after that
READ_CHUNK = 1024 * 1024


@dataclass
class ParsedLine:
    line: int
    offset: int
    length: int
    custom_id: str


@dataclass
class ValidationResult:
    errors: list[dict] = field(default_factory=list)
    model: str | None = None
    total: int = 0
    error_count: int = 0

    def add(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})


def iter_lines(fh, max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, int, bytes | None]]:
    """(line number, byte offset, bytes without the newline) for each line; bytes is None for a line longer
    than max_line, which is skipped without being held in memory."""
    number = line_start = chunk_start = 0
    buffer, too_long = b"", False
    while chunk := fh.read(READ_CHUNK):
        i = 0
        while True:
            cut = chunk.find(b"\n", i)
            if not too_long:
                buffer += chunk[i:] if cut == -1 else chunk[i:cut]
                if len(buffer) > max_line:
                    buffer, too_long = b"", True
            if cut == -1:
                break
            number += 1
            yield number, line_start, None if too_long else buffer
            line_start = chunk_start + cut + 1
            buffer, too_long, i = b"", False, cut + 1
        chunk_start += len(chunk)
    if buffer or too_long:
        yield number + 1, line_start, None if too_long else buffer


class InputValidator:
    """Checks each line of a batch input against the batch's endpoint and the served models."""

    def __init__(self, *, endpoint: str, models: dict[str, dict], max_requests: int) -> None:
        self.endpoint = endpoint
        self.models = models
        self.max_requests = max_requests
        self.result = ValidationResult()
        self._custom_ids: set[str] = set()
        self._embedding_inputs = 0

    def check(self, number: int, offset: int, raw: bytes | None) -> ParsedLine | None:
        result = self.result
        if raw is None:
            result.add("invalid_json_line", f"This line is longer than {MAX_LINE_BYTES} bytes.", number)
            return None
        if not raw.strip():
            return None  # blank lines (a trailing newline, say) are not requests
        if result.total >= self.max_requests:
            result.add("too_many_tasks",
                       f"The file has more than {self.max_requests} requests; split it into several batches.",
                       number)
            return None
        result.total += 1
        try:
            item = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            result.add("invalid_json_line", "This line is not parseable as valid JSON.", number)
            return None
        if not isinstance(item, dict):
            result.add("invalid_json_line", "This line must be a JSON object.", number)
            return None
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            result.add("missing_custom_id", "The request has no 'custom_id' (a non-empty string).", number,
                       "custom_id")
            return None
        if custom_id in self._custom_ids:
            result.add("duplicate_custom_id",
                       f"The custom_id '{custom_id[:200]}' is used by an earlier line; custom_id values must "
                       "be unique within a batch.", number, "custom_id")
            return None
        self._custom_ids.add(custom_id)
        if item.get("method") != "POST":
            result.add("invalid_request", f"Invalid 'method': {item.get('method')!r}. Only 'POST' is supported.",
                       number, "method")
            return None
        if item.get("url") != self.endpoint:
            result.add("url_mismatch",
                       f"The url {item.get('url')!r} does not match the batch's endpoint '{self.endpoint}'.",
                       number, "url")
            return None
        body = item.get("body")
        if not isinstance(body, dict):
            result.add("invalid_request", "The request has no 'body' object.", number, "body")
            return None
        model = body.get("model")
        if not isinstance(model, str) or not model:
            result.add("invalid_request", "The body has no 'model'.", number, "body.model")
            return None
        if model not in self.models:
            result.add("model_not_found",
                       f"The model '{model[:200]}' does not exist here. Served models: "
                       + ", ".join(sorted(self.models)) + ".", number, "body.model")
            return None
        if result.model is None:
            result.model = model
            if self.endpoint not in self.models[model]["endpoints"]:
                result.add("invalid_request",
                           f"The model '{model}' does not serve {self.endpoint}; it serves "
                           + ", ".join(self.models[model]["endpoints"]) + ".", number, "body.model")
                return None
        elif model != result.model:
            result.add("model_mismatch",
                       f"The model '{model[:200]}' differs from '{result.model}' on earlier lines; a batch "
                       "uses one model.", number, "body.model")
            return None
        if self.endpoint == "/v1/embeddings":
            inputs = body.get("input")
            self._embedding_inputs += len(inputs) if isinstance(inputs, list) else 1
            if self._embedding_inputs > self.max_requests:
                result.add("too_many_tasks",
                           f"The embedding inputs of this file add up to more than {self.max_requests}.",
                           number, "body.input")
                return None
        return ParsedLine(line=number, offset=offset, length=len(raw), custom_id=custom_id)

    def finish(self) -> ValidationResult:
        if self.result.total == 0 and self.result.error_count == 0:
            self.result.add("empty_file", "The input file has no requests.", None)
        return self.result
