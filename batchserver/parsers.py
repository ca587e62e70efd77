"""Request bodies: size limits for every body, and JSON read safely (every JSON endpoint parses it here).

Python's json module accepts what our storage cannot keep or our code cannot handle: nesting deep enough to
exhaust the interpreter's stack, U+0000 and lone surrogates (PostgreSQL refuses both in text and jsonb; SQLite
stores them and they break the response later), numbers past any range we store, and bodies of any size.
Each of those is a 4xx here, once, before a view sees the data.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from django.conf import settings
from rest_framework.parsers import BaseParser, get_encoding  # type: ignore[attr-defined]  # missing from drf-stubs
from rest_framework.renderers import JSONRenderer

from batchserver.errors import InvalidRequest, TooLarge

MULTIPART_FRAMING = 64 * 1024  # what multipart encoding adds around a file
MAX_DEPTH = 64  # far beyond any body of this API; well below Python's recursion limit
MAX_INT_DIGITS = 19  # integers are stored in 64-bit columns at most
INT64 = 2**63

# The depth is counted on the brackets left once strings (escapes included) are taken out.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def reject_oversized_body(request, limit: int, *, framing: int = MULTIPART_FRAMING) -> None:
    """Answer 413 from the Content-Length alone, before any of an oversized body is read."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit + framing:
        raise TooLarge(
            f"The request body is {length} bytes; the limit is {limit} bytes for this endpoint. Send a smaller body."
        )


def json_loads(text: str, *, what: str = "the request body", param: str | None = None) -> Any:
    """Parse JSON text from a client; anything we could not store or handle is an InvalidRequest."""
    subject = what[:1].upper() + what[1:]
    _check_depth(text, subject, param)
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant)
    except _Unacceptable as exc:
        raise InvalidRequest(f"{subject} holds {exc}.", param=param) from None
    except ValueError as exc:
        raise InvalidRequest(
            f"We could not parse {what} as JSON: {exc}. Send valid JSON (RFC 8259).", param=param
        ) from None
    _check_strings(data, subject, param)
    return data


class JSONParser(BaseParser):
    """application/json bodies, at most BATCHSERVER_MAX_JSON_BODY_BYTES, parsed by `json_loads`.

    Not a subclass of DRF's JSONParser on purpose: DRF reads a JSONParser's whole body into memory before the
    parser runs; this one gets the raw stream, so an oversized body is refused before it is read.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        limit = settings.BATCHSERVER_MAX_JSON_BODY_BYTES
        if (request := parser_context.get("request")) is not None:
            reject_oversized_body(request, limit, framing=0)
        # The length header may be missing or wrong: never read more than the limit and one byte.
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise TooLarge(
                f"The request body is larger than {limit} bytes, the limit for JSON bodies. Send a smaller body."
            )
        encoding = get_encoding(parser_context)
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                f"We could not parse the request body: it is not valid {encoding} "
                f"(bad byte at position {exc.start}). Send JSON encoded as UTF-8."
            ) from None
        return json_loads(text)


class _Unacceptable(ValueError):
    pass


def _check_depth(text: str, subject: str, param: str | None) -> None:
    """Refuse nesting deeper than MAX_DEPTH without recursing: count brackets outside strings."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > MAX_DEPTH:
        raise InvalidRequest(
            f"{subject} is nested more than {MAX_DEPTH} levels deep. Send a flatter JSON document.", param=param
        )


def _parse_int(digits: str) -> int:
    # Checked on the text: Python refuses to convert more than 4,300 digits, and anything past 64 bits would
    # fail later in the database.
    if len(digits.lstrip("-")) > MAX_INT_DIGITS or not -INT64 <= (value := int(digits)) < INT64:
        raise _Unacceptable(
            f"the integer {digits[:24]}{'…' if len(digits) > 24 else ''}, which is out of range "
            f"(integers must be between {-INT64} and {INT64 - 1})"
        )
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unacceptable(
            f"the number {text[:24]}, which is out of range for a double-precision number; send a smaller one"
        )
    return value


def _reject_constant(name: str) -> float:
    raise _Unacceptable(f"{name}, which is not valid JSON; send a finite number or null")


def _check_strings(data: Any, subject: str, param: str | None) -> None:
    """Every key and string value must be storable text: no U+0000, no lone surrogate (a UTF-16 half)."""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and (found := _UNSTORABLE.search(value)):
            nul = found.group() == "\x00"
            raise InvalidRequest(
                f"{subject} holds {'the NUL character' if nul else 'a lone UTF-16 surrogate'} "
                f"(\\u{ord(found.group()):04x}) in the string {json.dumps(value[:40])}, which cannot be stored. "
                + ("Remove it." if nul else "Remove it; a character outside the BMP is sent as a whole pair."),
                param=param,
            )
