"""Every validation error code, each from a real file, with its line number."""

from __future__ import annotations

import json

import pytest

from tests.conftest import wait_for_status
from tests.helpers import request_line, upload_batch_file


def validate(client, lines, endpoint="/v1/chat/completions"):
    file = upload_batch_file(client, lines)
    batch = client.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window="24h")
    return wait_for_status(client, batch.id, {"failed", "in_progress"}, timeout=30)


CASES = {
    "invalid_json_line": ([request_line("a"), b'{"custom_id": "b", ', request_line("c")], 2),
    "missing_custom_id": ([request_line("a"), {k: v for k, v in request_line("b").items() if k != "custom_id"}], 2),
    "duplicate_custom_id": ([request_line("a"), request_line("b"), request_line("a")], 3),
    "url_mismatch": ([request_line("a"), request_line("b", url="/v1/completions")], 2),
    "model_mismatch": ([request_line("a"), request_line("b", model="SmolLM2-135M-Instruct")], 2),
    "model_not_found": ([request_line("a", model="gpt-7")], 1),
    "invalid_request": ([request_line("a"), request_line("b", method="GET")], 2),
}


@pytest.mark.parametrize("code", list(CASES))
def test_validation_error_codes(client, code, db_access):
    from batches_api.models import BatchRequest

    lines, line = CASES[code]
    batch = validate(client, lines)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors.object == "list"
    first = batch.errors.data[0]
    assert (first.code, first.line) == (code, line)
    assert first.message
    assert BatchRequest.objects.filter(batch_id=batch.id).count() == 0


def test_body_without_an_object_is_invalid_request(client):
    batch = validate(client, [{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": "hi"}])
    assert (batch.errors.data[0].code, batch.errors.data[0].line) == ("invalid_request", 1)


def test_empty_file(client):
    batch = validate(client, [])
    assert batch.errors.data[0].code == "empty_file"


def test_too_many_tasks(client):
    from django.conf import settings

    limit = settings.BATCHSERVER_MAX_BATCH_REQUESTS
    lines = [
        b'{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"fake-echo",'
        b'"messages":[]}}' % i
        for i in range(limit + 1)
    ]
    batch = validate(client, lines)
    assert [(e.code, e.line) for e in batch.errors.data] == [("too_many_tasks", limit + 1)]


def test_every_error_is_reported_with_its_line(client):
    batch = validate(client, [request_line("a"), b"not json", request_line("a"), request_line("c", model="x")])
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("model_not_found", 4),
    ]


def test_model_that_does_not_serve_the_endpoint(client):
    batch = validate(client, [request_line("a", model="all-MiniLM-L6-v2")])
    assert batch.errors.data[0].code == "invalid_request"
    assert "does not serve /v1/chat/completions" in batch.errors.data[0].message


def test_blank_lines_and_crlf_are_tolerated(client):
    data = [json.dumps(request_line("a")).encode() + b"\r", b"", json.dumps(request_line("b")).encode()]
    batch = validate(client, data)
    assert batch.status == "in_progress"
    assert batch.request_counts.total == 2
    client.batches.cancel(batch.id)


def test_a_chat_model_in_a_score_or_rerank_batch_is_refused_with_its_line(client):
    for endpoint in ("/v1/score", "/v1/rerank"):
        lines = [request_line("a", url=endpoint, model="SmolLM2-135M-Instruct"), request_line("b", url=endpoint)]
        batch = validate(client, lines, endpoint)
        assert batch.status == "failed"
        assert [(e.code, e.line, e.param) for e in batch.errors.data][0] == ("invalid_request", 1, "body.model")
        assert batch.errors.data[0].message == (
            f"The model 'SmolLM2-135M-Instruct' does not serve {endpoint}; it serves /v1/chat/completions, "
            "/v1/completions, /v1/responses."
        )


def test_embeddings_completions_score_and_rerank_files_validate(client):
    for endpoint in ("/v1/embeddings", "/v1/completions", "/v1/score", "/v1/rerank"):
        batch = validate(client, [request_line("a", url=endpoint), request_line("b", url=endpoint)], endpoint)
        assert batch.status == "in_progress", batch.errors
        client.batches.cancel(batch.id)


# ------------------------------------------------------------------------------------------------ hostile lines
HOSTILE = {
    "nested 100,000 deep": b'{"custom_id": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "a 5,000-digit integer": b'{"custom_id": "big", "n": ' + b"9" * 5000 + b"}",
    "a lone surrogate in custom_id": b'{"custom_id": "\\ud800", "method": "POST"}',
    "a lone surrogate in the body": json.dumps(
        request_line("s", body={"model": "fake-echo", "messages": [{"role": "user", "content": "PLACEHOLDER"}]})
    )
    .encode()
    .replace(b"PLACEHOLDER", b"\\udc00 alone"),
    "a NUL in custom_id": b'{"custom_id": "a\\u0000b", "method": "POST"}',
    "invalid UTF-8": b'{"custom_id": "\xff\xfe"}',
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_lines_get_an_error_with_their_line_number(case):
    from batches_api.validation import InputValidator

    validator = InputValidator(
        endpoint="/v1/chat/completions", models={"fake-echo": {"endpoints": ["/v1/chat/completions"]}}, max_requests=100
    )
    good = json.dumps(request_line("good")).encode()
    assert validator.check(1, 0, good) is not None
    assert validator.check(2, len(good) + 1, HOSTILE[case]) is None
    result = validator.finish()
    assert [(e["line"], e["code"]) for e in result.errors] == [(2, "invalid_json_line")]


def test_a_line_longer_than_16_mb_is_reported_without_being_held():
    import io

    from batches_api.validation import MAX_LINE_BYTES, InputValidator, iter_lines

    data = json.dumps(request_line("a")).encode() + b"\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\n"
    validator = InputValidator(
        endpoint="/v1/chat/completions", models={"fake-echo": {"endpoints": ["/v1/chat/completions"]}}, max_requests=100
    )
    for number, offset, raw in iter_lines(io.BytesIO(data)):
        validator.check(number, offset, raw)
    assert [(e["line"], e["code"]) for e in validator.finish().errors] == [(2, "invalid_json_line")]


def test_errors_stay_bounded_and_summarise_the_rest():
    from batches_api.validation import MAX_ERRORS, MAX_ERRORS_PER_CODE, MAX_MESSAGE_CHARS, InputValidator

    validator = InputValidator(
        endpoint="/v1/chat/completions",
        models={"fake-echo": {"endpoints": ["/v1/chat/completions"]}},
        max_requests=100_000,
    )
    for number in range(1, 5001):
        validator.check(
            number, 0, b"not json" if number % 2 else json.dumps(request_line(f"r{number}", model="m" * 5000)).encode()
        )
    errors = validator.finish().errors
    assert len(errors) <= MAX_ERRORS + 2
    listed = [e for e in errors if e["line"] is not None]
    assert {e["code"] for e in listed} == {"invalid_json_line", "model_not_found"}
    assert all(
        sum(e["code"] == code for e in listed) == MAX_ERRORS_PER_CODE
        for code in ("invalid_json_line", "model_not_found")
    )
    assert all(len(e["message"]) <= MAX_MESSAGE_CHARS for e in errors)
    summaries = {e["code"]: e["message"] for e in errors if e["line"] is None}
    assert summaries["invalid_json_line"].startswith("2480 more lines")


def test_hostile_lines_fail_the_batch_promptly_with_their_line_numbers(client):
    # (Invalid UTF-8 never gets this far: the upload refuses it.)
    lines = [request_line("ok"), *(raw for case, raw in HOSTILE.items() if case != "invalid UTF-8")]
    batch = validate(client, lines)
    assert batch.status == "failed"
    assert sorted(e.line for e in batch.errors.data) == list(range(2, len(lines) + 1))


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/embeddings"])
def test_the_validator_accepts_or_reports_every_line_of_any_input(endpoint):
    """Property: on arbitrary bytes and arbitrary JSON, the validator never raises, and every non-blank line
    is either accepted or reported with its own line number."""
    import io

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from batches_api.validation import InputValidator, iter_lines

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    values = st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    )
    requests = st.fixed_dictionaries(
        {
            "custom_id": st.text(max_size=12) | st.integers(),
            "method": st.just("POST"),
            "url": st.sampled_from([endpoint, "/v1/other"]),
            "body": st.fixed_dictionaries(
                {"model": st.sampled_from(["m", "x"])}, optional={"input": values, "messages": values}
            ),
        }
    )
    line = (
        st.binary(max_size=200)
        | values.map(lambda v: json.dumps(v).encode())
        | requests.map(lambda v: json.dumps(v).encode())
    ).filter(lambda raw: b"\n" not in raw)

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(line, max_size=12))
    def check(lines):
        validator = InputValidator(endpoint=endpoint, models={"m": {"endpoints": [endpoint]}}, max_requests=50)
        accepted = set()
        for number, offset, raw in iter_lines(io.BytesIO(b"\n".join(lines))):
            if validator.check(number, offset, raw) is not None:
                accepted.add(number)
        result = validator.finish()
        reported = {e["line"] for e in result.errors if e["line"] is not None}
        expected = {
            n for n, raw in enumerate(lines, start=1) if (raw.removeprefix(b"\xef\xbb\xbf") if n == 1 else raw).strip()
        }  # a BOM opens a file
        assert accepted.isdisjoint(reported)
        assert accepted | reported == expected or (result.omitted or any(e["line"] is None for e in result.errors))

    check()
