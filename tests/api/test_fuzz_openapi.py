"""Schemathesis sends what /v1/openapi.json describes (valid input) and what it does not (invalid input) to every
operation of the live server: no answer may be a 5xx, and every 4xx is OpenAI's error envelope.

Hypothesis seldom draws the values that break servers (a NUL, half a surrogate pair, deep nesting, numbers
past any column), so some cases carry one of those in place of a generated value."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

# Bounded: a few dozen examples for each operation and mode, the same ones on every run.
FUZZ_SETTINGS = settings(
    max_examples=40, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


# Values that travel in a URL or a form as text; those that broke this server first (Hypothesis favours them).
NASTY_TEXT = [
    "\x00",
    "a\x00b",
    "x\r\ny",
    "%00",
    "é中😀",
    "x" * 70_000,
    "[" * 2_000,
    "9" * 30,
    "1e400",
    "NaN",
    "../../etc/passwd",
    "\t",
    " " * 3,
    "-1",
    "null",
    "true",
    "{}",
    "[]",
]
# Values only JSON can carry: a lone surrogate (as a \ud800 escape), nesting, numbers out of range.
NASTY_JSON = [
    "\ud800",
    {"\ud800": "v"},
    *NASTY_TEXT[:2],
    {"\x00": "v"},
    nested(200),
    10**30,
    int("9" * 4000),
    "a\udfffb",
    *NASTY_TEXT[2:],
    -(10**30),
    1e308,
    -0.0,
    [None] * 10_000,
    True,
    None,
]
URL_TEXT_MAX = 1_000  # gunicorn answers a request line past 4 KB itself (414), before the application


def has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def slots(case) -> list[tuple[str, str | None]]:
    """Where a value can go: a path parameter, a query parameter, a body field or the whole JSON body."""
    places: list[tuple[str, str | None]] = [("path", key) for key in case.path_parameters or {}]
    places += [("query", key) for key in case.query or {}]
    if isinstance(case.body, dict):
        places += [("body", key) for key in case.body]
    if case.media_type == "application/json":
        places.append(("whole body", None))
    return places or [("query", "after")]


def inject(case, value, slot: tuple[str, str | None]) -> bytes | None:
    """Put `value` in `slot`, as text where the slot carries text only. A JSON body is returned serialized, to
    be sent in place of the case's: schemathesis re-checks a changed case and cannot encode a lone surrogate."""
    kind, key = slot
    if case.media_type == "application/json" and kind in ("body", "whole body"):
        return json.dumps({**case.body, key: value} if kind == "body" else value).encode()
    value = value if isinstance(value, str) else str(value)
    if has_surrogate(value):
        value = "\x00"  # URLs and forms carry UTF-8 text only
    if kind == "body":
        case.body[key] = value
    elif kind == "path":
        case.path_parameters[key] = value[:URL_TEXT_MAX]
    else:
        case.query = {**(case.query or {}), key: value[:URL_TEXT_MAX]}
    return None


def operations() -> list[str]:
    """'METHOD /path' of every operation, from the schema generator the live server serves."""
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    return [
        f"{method.upper()} {path}"
        for path, item in paths.items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server}/v1/openapi.json")


def test_the_fuzzed_operations_are_the_served_ones(api_schema):
    served = {f"{op.ok().method.upper()} {op.ok().path}" for op in api_schema.get_all_operations()}
    assert served == set(operations())


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("operation", operations())
def test_no_input_gets_a_5xx_and_every_4xx_is_an_openai_error(api_schema, server, keys, operation, mode):
    method, path = operation.split(" ", 1)

    @given(case=api_schema[path][method].as_strategy(generation_mode=mode), data=st.data())
    @FUZZ_SETTINGS
    def check(case, data):
        json_body = None
        if data.draw(st.integers(0, 3), label="nasty") > 0:  # most cases carry one
            json_body = inject(
                case,
                data.draw(st.sampled_from(NASTY_JSON), label="value"),
                data.draw(st.sampled_from(slots(case)), label="slot"),
            )
        kwargs = case.as_transport_kwargs(base_url=server, headers={"Authorization": f"Bearer {keys['fuzz']}"})
        if json_body is not None:
            kwargs.pop("json", None)
            kwargs["data"] = json_body
            kwargs["headers"]["Content-Type"] = "application/json"
        response = requests.request(**kwargs, timeout=30)
        sent = f"{case.method} {response.request.url} body={response.request.body!r:.300}"
        assert response.status_code < 500, f"{sent}\n→ {response.status_code} {response.text[:500]}"
        # A dot segment in a path parameter leaves /v1/ (the client resolves it): not an API answer.
        if response.status_code >= 400 and urlparse(response.request.url).path.startswith("/v1/"):
            try:
                body = response.json()
            except json.JSONDecodeError:
                pytest.fail(f"{sent}\n→ {response.status_code}, not JSON: {response.text[:500]}")
            assert set(body) == {"error"}, f"{sent}\n→ {body}"
            assert set(body["error"]) == {"message", "type", "param", "code"}, f"{sent}\n→ {body}"
            assert body["error"]["message"], f"{sent}\n→ {body}"

    check()
