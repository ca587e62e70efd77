"""Validation of a batch input file: one streaming pass, memory flat in file size. Every line is either accepted
as a request or reported with its line number; nothing a client can put in a file makes it raise."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from batchserver.errors import InvalidRequest
from batchserver.parsers import json_loads

MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_ERRORS = 100  # errors listed on the batch in all …
MAX_ERRORS_PER_CODE = 20  # … and of one code; the rest are counted in one summary entry per code
MAX_MESSAGE_CHARS = 300
MAX_CUSTOM_ID_CHARS = 1024
READ_CHUNK = 1024 * 1024
TOKEN_CHUNK = 512  # request bodies handed to the token counter at once (a tokenizer encodes a list faster)
UTF8_BOM = b"\xef\xbb\xbf"


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
    input_tokens: int = 0  # of the requests, by the model's count (when a counter is given and no line failed)
    error_count: int = 0
    omitted: Counter = field(default_factory=Counter)  # errors not listed, by code

    def add(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        self.error_count += 1
        listed = sum(1 for error in self.errors if error["code"] == code)
        if len(self.errors) >= MAX_ERRORS or listed >= MAX_ERRORS_PER_CODE:
            self.omitted[code] += 1
            return
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        self.errors.append({"code": code, "message": message, "param": param, "line": line})

    def summarize(self) -> None:
        for code, count in sorted(self.omitted.items()):
            self.errors.append(
                {
                    "code": code,
                    "param": None,
                    "line": None,
                    "message": f"{count} more line{'s' if count != 1 else ''} with this error (not listed one by one).",
                }
            )
        self.omitted.clear()


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


class LineError(Exception):
    """One line is not a valid request: its error code, message and parameter."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def parse_line(raw: bytes) -> dict:
    """A line's JSON object, or LineError for anything that is not one. The line is read by the same rules as
    the API's JSON bodies (batchserver.parsers.json_loads): no nesting past 64 levels, no numbers out of
    range, no NUL or unpaired surrogates."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LineError("invalid_json_line", "This line is not valid UTF-8 text.") from None
    try:
        item = json_loads(text, what="this line")
    except InvalidRequest as error:
        raise LineError("invalid_json_line", error.message) from None
    if not isinstance(item, dict):
        raise LineError("invalid_json_line", "This line must be a JSON object.")
    return item


class InputValidator:
    """Checks each line of a batch input against the batch's endpoint and the served models, and counts the input
    tokens of its requests with `count_tokens(model, endpoint, bodies)` (see batches_api.tokens), a chunk of
    bodies at a time. Counting stops at the first error: a batch that fails runs nothing."""

    def __init__(
        self,
        *,
        endpoint: str,
        models: dict[str, dict],
        max_requests: int,
        count_tokens: Callable[[str, str, list[dict]], list[int]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.models = models
        self.max_requests = max_requests
        self.count_tokens = count_tokens
        self.result = ValidationResult()
        self._custom_ids: set[str] = set()
        self._embedding_inputs = 0
        self._bodies: list[dict] = []

    def check(self, number: int, offset: int, raw: bytes | None) -> ParsedLine | None:
        """The request on this line, or None (a blank line, or an error recorded in self.result). Never raises."""
        if raw is None:
            self.result.add("invalid_json_line", f"This line is longer than {MAX_LINE_BYTES} bytes.", number)
            return None
        if number == 1 and raw.startswith(UTF8_BOM):  # editors on Windows start files with one
            raw, offset = raw[len(UTF8_BOM) :], offset + len(UTF8_BOM)
        if not raw.strip():
            return None  # blank lines (a trailing newline, say) are not requests
        if self.result.total >= self.max_requests:
            self.result.add(
                "too_many_tasks",
                f"The file has more than {self.max_requests} requests; split it into several batches.",
                number,
            )
            return None
        self.result.total += 1
        try:
            item = parse_line(raw)
            custom_id = self._check_request(item)
        except LineError as error:
            self.result.add(error.code, error.message, number, error.param)
            return None
        except Exception as exc:
            self.result.add("invalid_request", f"This line could not be validated ({type(exc).__name__}).", number)
            return None
        if self.count_tokens is not None and not self.result.error_count:
            self._bodies.append(item["body"])
            if len(self._bodies) >= TOKEN_CHUNK:
                self._count()
        return ParsedLine(line=number, offset=offset, length=len(raw), custom_id=custom_id)

    def _count(self) -> None:
        bodies, self._bodies = self._bodies, []
        if bodies and self.count_tokens is not None and self.result.model and not self.result.error_count:
            self.result.input_tokens += sum(self.count_tokens(self.result.model, self.endpoint, bodies))

    def _check_request(self, item: dict) -> str:
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise LineError("missing_custom_id", "The request has no 'custom_id' (a non-empty string).", "custom_id")
        if len(custom_id) > MAX_CUSTOM_ID_CHARS:
            raise LineError(
                "invalid_request", f"The 'custom_id' must be at most {MAX_CUSTOM_ID_CHARS} characters.", "custom_id"
            )
        if custom_id in self._custom_ids:
            raise LineError(
                "duplicate_custom_id",
                f"The custom_id '{custom_id[:200]}' is used by an earlier line; custom_id values must be "
                "unique within a batch.",
                "custom_id",
            )
        self._custom_ids.add(custom_id)
        if item.get("method") != "POST":
            raise LineError(
                "invalid_request",
                f"Invalid 'method': {str(item.get('method'))[:100]!r}. Only 'POST' is supported.",
                "method",
            )
        if item.get("url") != self.endpoint:
            raise LineError(
                "url_mismatch",
                f"The url {str(item.get('url'))[:200]!r} does not match the batch's endpoint '{self.endpoint}'.",
                "url",
            )
        body = item.get("body")
        if not isinstance(body, dict):
            raise LineError("invalid_request", "The request has no 'body' object.", "body")
        self._check_model(body.get("model"))
        if self.endpoint == "/v1/embeddings":
            inputs = body.get("input")
            self._embedding_inputs += len(inputs) if isinstance(inputs, list) else 1
            if self._embedding_inputs > self.max_requests:
                raise LineError(
                    "too_many_tasks",
                    f"The embedding inputs of this file add up to more than {self.max_requests}.",
                    "body.input",
                )
        return custom_id

    def _check_model(self, model) -> None:
        result = self.result
        if not isinstance(model, str) or not model:
            raise LineError("invalid_request", "The body has no 'model'.", "body.model")
        if model not in self.models:
            raise LineError(
                "model_not_found",
                f"The model '{model[:200]}' does not exist here. Served models: "
                + ", ".join(sorted(self.models))
                + ".",
                "body.model",
            )
        if result.model is None:
            result.model = model
            if self.endpoint not in self.models[model]["endpoints"]:
                raise LineError(
                    "invalid_request",
                    f"The model '{model}' does not serve {self.endpoint}; it serves "
                    + ", ".join(self.models[model]["endpoints"])
                    + ".",
                    "body.model",
                )
        elif model != result.model:
            raise LineError(
                "model_mismatch",
                f"The model '{model[:200]}' differs from '{result.model}' on earlier lines; a batch uses one model.",
                "body.model",
            )

    def finish(self) -> ValidationResult:
        self._count()
        if self.result.total == 0 and self.result.error_count == 0:
            self.result.add("empty_file", "The input file has no requests.", None)
        self.result.summarize()
        return self.result
