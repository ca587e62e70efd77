"""The exact error bodies of bad input, as OpenAI words them: status, message and param, case by case."""

from __future__ import annotations

import json

import pytest

# The endpoints of tests/models.json.
ENDPOINTS = "/v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings, /v1/score, /v1/rerank"
PURPOSES = "'assistants', 'batch', 'fine-tune', 'vision', 'user_data', 'evals'"
SECONDS = "It must be between 3600 (1 hour) and 2592000 (30 days)."
BATCH = {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
UPLOAD = {"bytes": 3, "filename": "x.jsonl", "mime_type": "application/jsonl", "purpose": "batch"}
FILE = {"file": ("a.txt", b"x")}


def without(body: dict, name: str) -> dict:
    return {key: value for key, value in body.items() if key != name}


JSON_BODIES = [  # path, body, status, param, message
    ("/v1/batches", ["a"], 400, None, "The request body must be a JSON object."),
    ("/v1/batches", None, 400, None, "The request body must be a JSON object."),
    ("/v1/batches", {}, 400, "input_file_id", "Missing required parameter: 'input_file_id'."),
    (
        "/v1/batches",
        {**BATCH, "input_file_id": ""},
        400,
        "input_file_id",
        "Missing required parameter: 'input_file_id'.",
    ),
    (
        "/v1/batches",
        {**BATCH, "input_file_id": None},
        400,
        "input_file_id",
        "Missing required parameter: 'input_file_id'.",
    ),
    ("/v1/batches", {**BATCH, "input_file_id": 5}, 400, "input_file_id", "Invalid 'input_file_id': expected a string."),
    ("/v1/batches", without(BATCH, "endpoint"), 400, "endpoint", "Missing required parameter: 'endpoint'."),
    ("/v1/batches", {**BATCH, "endpoint": 5}, 400, "endpoint", "Invalid 'endpoint': expected a string."),
    (
        "/v1/batches",
        {**BATCH, "endpoint": "/v1/nope"},
        400,
        "endpoint",
        f"Invalid value for 'endpoint': '/v1/nope'. This server runs batches for: {ENDPOINTS}.",
    ),
    (
        "/v1/batches",
        without(BATCH, "completion_window"),
        400,
        "completion_window",
        "Missing required parameter: 'completion_window'.",
    ),
    (
        "/v1/batches",
        {**BATCH, "completion_window": "48h"},
        400,
        "completion_window",
        "Invalid value for 'completion_window': '48h'. Supported values are: '24h'.",
    ),
    (
        "/v1/batches",
        {**BATCH, "metadata": ["a"]},
        400,
        "metadata",
        "Invalid 'metadata': expected an object of string keys and values.",
    ),
    (
        "/v1/batches",
        {**BATCH, "metadata": {f"k{i}": "v" for i in range(17)}},
        400,
        "metadata",
        "Invalid 'metadata': at most 16 key-value pairs, got 17.",
    ),
    (
        "/v1/batches",
        {**BATCH, "metadata": {"k" * 65: "v"}},
        400,
        "metadata",
        f"Invalid 'metadata': key '{'k' * 65}…' is longer than 64 characters.",
    ),
    (
        "/v1/batches",
        {**BATCH, "metadata": {"k": "v" * 513}},
        400,
        "metadata",
        "Invalid 'metadata': the value of 'k' is longer than 512 characters.",
    ),
    (
        "/v1/batches",
        {**BATCH, "metadata": {"k": 1}},
        400,
        "metadata",
        "Invalid 'metadata': the value of 'k' must be a string.",
    ),
    (
        "/v1/batches",
        {**BATCH, "output_expires_after": "x"},
        400,
        "output_expires_after",
        "Invalid 'output_expires_after': expected an object.",
    ),
    (
        "/v1/batches",
        {**BATCH, "output_expires_after": {"seconds": 7200}},
        400,
        "output_expires_after.anchor",
        "Missing required parameter: 'output_expires_after.anchor'.",
    ),
    (
        "/v1/batches",
        {**BATCH, "output_expires_after": {"anchor": "created_at", "seconds": 10}},
        400,
        "output_expires_after.seconds",
        f"Invalid 'output_expires_after.seconds': 10. {SECONDS}",
    ),
    (
        "/v1/batches",
        {**BATCH, "output_expires_after": {"anchor": "created_at", "seconds": "abc"}},
        400,
        "output_expires_after.seconds",
        "Invalid 'output_expires_after.seconds': expected an integer.",
    ),
    (
        "/v1/batches",
        {
            **BATCH,
            "metadata": {"k" * 64: "v" * 512},
            "output_expires_after": {"anchor": "created_at", "seconds": "7200"},
        },
        404,
        "input_file_id",
        "No such file: 'file-nope'",
    ),
    ("/v1/files", ["a"], 400, None, "The request body must be a JSON object."),
    ("/v1/uploads", ["a"], 400, None, "The request body must be a JSON object."),
    ("/v1/uploads", {}, 400, "bytes", "Missing required parameter: 'bytes'."),
    ("/v1/uploads", {**UPLOAD, "bytes": "3"}, 400, "bytes", "Invalid 'bytes': expected an integer."),
    ("/v1/uploads", {**UPLOAD, "bytes": 3.5}, 400, "bytes", "Invalid 'bytes': expected an integer."),
    ("/v1/uploads", {**UPLOAD, "bytes": -1}, 400, "bytes", "Invalid 'bytes': must be zero or more."),
    ("/v1/uploads", {**UPLOAD, "filename": ""}, 400, "filename", "Missing required parameter: 'filename'."),
    (
        "/v1/uploads",
        {**UPLOAD, "filename": "x" * 600},
        400,
        "filename",
        "Invalid 'filename': the file name is 600 characters long; the limit is 512. Use a shorter name.",
    ),
    (
        "/v1/uploads",
        {**UPLOAD, "filename": "a\nb.jsonl"},
        400,
        "filename",
        "Invalid 'filename': the file name holds U+000A at position 1, a control character, line break or other "
        "unprintable character. Rename the file without it.",
    ),
    (
        "/v1/uploads",
        {**UPLOAD, "filename": "x.csv"},
        400,
        "filename",
        "Invalid file format for Batch API: 'x.csv'. Must be .jsonl (one JSON request per line).",
    ),
    ("/v1/uploads", without(UPLOAD, "mime_type"), 400, "mime_type", "Missing required parameter: 'mime_type'."),
    (
        "/v1/uploads",
        {**UPLOAD, "mime_type": "nope"},
        400,
        "mime_type",
        "Invalid 'mime_type': 'nope'. Send a MIME type of at most 255 characters such as 'application/jsonl' or "
        "'text/plain; charset=utf-8'.",
    ),
    ("/v1/uploads", {**UPLOAD, "purpose": None}, 400, "purpose", "Missing required parameter: 'purpose'."),
    (
        "/v1/uploads",
        {**UPLOAD, "purpose": "batch_output"},
        400,
        "purpose",
        f"Invalid value for 'purpose': 'batch_output'. Supported values are: {PURPOSES}.",
    ),
    (
        "/v1/uploads",
        {**UPLOAD, "expires_after": []},
        400,
        "expires_after",
        "Invalid 'expires_after': expected an object.",
    ),
    (
        "/v1/uploads",
        {**UPLOAD, "expires_after": {"anchor": "created_at", "seconds": 1}},
        400,
        "expires_after.seconds",
        f"Invalid 'expires_after.seconds': 1. {SECONDS}",
    ),
    (
        "/v1/uploads",
        {**UPLOAD, "bytes": 300 * 1024 * 1024},
        413,
        "bytes",
        "File 'x.jsonl' is 300 MB; files for purpose 'batch' may be at most 200 MB. Split it into several files.",
    ),
    ("/v1/uploads/{upload}/complete", [1], 400, None, "The request body must be a JSON object."),
    (
        "/v1/uploads/{upload}/complete",
        {"part_ids": "nope"},
        400,
        "part_ids",
        "Invalid 'part_ids': expected a list of part ids.",
    ),
    ("/v1/uploads/{upload}/complete", {"part_ids": []}, 400, "part_ids", "Missing required parameter: 'part_ids'."),
    (
        "/v1/uploads/{upload}/complete",
        {"part_ids": [1]},
        400,
        "part_ids[0]",
        "Invalid 'part_ids[0]': expected a string.",
    ),
    (
        "/v1/uploads/{upload}/complete",
        {"part_ids": ["part_x", "part_x"]},
        400,
        "part_ids",
        "Invalid 'part_ids': a part is listed twice.",
    ),
    (
        "/v1/uploads/{upload}/complete",
        {"part_ids": ["part_x"], "md5": 5},
        400,
        "md5",
        "Invalid 'md5': expected a string.",
    ),
    (
        "/v1/uploads/{upload}/complete",
        {"part_ids": ["part_x"], "md5": None},
        400,
        "part_ids",
        "Invalid 'part_ids': no part 'part_x' in Upload '{upload}'.",
    ),
]

QUERIES = [  # path, status, param, message
    ("/v1/batches?limit=0", 400, "limit", "Invalid 'limit': 0. It must be between 1 and 100."),
    ("/v1/batches?limit=101", 400, "limit", "Invalid 'limit': 101. It must be between 1 and 100."),
    (
        "/v1/batches?limit=99999999999999999999999",
        400,
        "limit",
        "Invalid 'limit': 99999999999999999999999. It must be between 1 and 100.",
    ),
    ("/v1/batches?limit=abc", 400, "limit", "Invalid 'limit': expected an integer, got 'abc'."),
    ("/v1/batches?limit=1e2", 400, "limit", "Invalid 'limit': expected an integer, got '1e2'."),
    (
        "/v1/batches?after=batch_unknown",
        400,
        "after",
        "Invalid 'after': no object with id 'batch_unknown' in this list.",
    ),
    ("/v1/files?limit=0", 400, "limit", "Invalid 'limit': 0. It must be between 1 and 10000."),
    ("/v1/files?limit=10001", 400, "limit", "Invalid 'limit': 10001. It must be between 1 and 10000."),
    ("/v1/files?after=file-x", 400, "after", "Invalid 'after': no object with id 'file-x' in this list."),
    ("/v1/models/gpt-7", 404, "model", "The model 'gpt-7' does not exist"),
    ("/v1/batches/batch_x", 404, None, "No such batch: 'batch_x'"),
    ("/v1/files/file-x", 404, None, "No such file: 'file-x'"),
]

FORMS = [  # path, files, fields, status, param, message
    (
        "/v1/files",
        None,
        {"purpose": "batch"},
        400,
        "file",
        "Missing required parameter: 'file'. Send it as multipart/form-data.",
    ),
    (
        "/v1/files",
        None,
        {"purpose": "batch", "file": "not a file"},
        400,
        "file",
        "Missing required parameter: 'file'. Send it as multipart/form-data.",
    ),
    ("/v1/files", FILE, {}, 400, "purpose", "Missing required parameter: 'purpose'."),
    ("/v1/files", FILE, {"purpose": ""}, 400, "purpose", "Missing required parameter: 'purpose'."),
    (
        "/v1/files",
        FILE,
        {"purpose": "batch_output"},
        400,
        "purpose",
        f"Invalid value for 'purpose': 'batch_output'. Supported values are: {PURPOSES}.",
    ),
    (
        "/v1/files",
        {"file": ("a.csv", b"{}\n")},
        {"purpose": "batch"},
        400,
        "file",
        "Invalid file format for Batch API: 'a.csv'. Must be .jsonl (one JSON request per line).",
    ),
    (
        "/v1/files",
        FILE,
        {"purpose": "user_data", "expires_after": "{nope"},
        400,
        "expires_after",
        "We could not parse 'expires_after' as JSON: Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1). Send valid JSON (RFC 8259).",
    ),
    (
        "/v1/files",
        FILE,
        {"purpose": "user_data", "expires_after": "[]"},
        400,
        "expires_after",
        "Invalid 'expires_after': expected an object.",
    ),
    (
        "/v1/files",
        FILE,
        {"purpose": "user_data", "expires_after": "[" * 100 + "]" * 100},
        400,
        "expires_after",
        "'expires_after' is nested more than 64 levels deep. Send a flatter JSON document.",
    ),
    (
        "/v1/files",
        FILE,
        {"purpose": "user_data", "expires_after[anchor]": "created_at", "expires_after[seconds]": "abc"},
        400,
        "expires_after.seconds",
        "Invalid 'expires_after.seconds': expected an integer.",
    ),
    (
        "/v1/files",
        FILE,
        {"purpose": "user_data", "expires_after[anchor]": "created_at", "expires_after[seconds]": "5"},
        400,
        "expires_after.seconds",
        f"Invalid 'expires_after.seconds': 5. {SECONDS}",
    ),
    (
        "/v1/uploads/{upload}/parts",
        None,
        {"x": "y"},
        400,
        "data",
        "Missing required parameter: 'data'. Send the part as multipart/form-data.",
    ),
    (
        "/v1/uploads/{upload}/parts",
        None,
        {"data": "not a file"},
        400,
        "data",
        "Missing required parameter: 'data'. Send the part as multipart/form-data.",
    ),
]


@pytest.fixture(scope="module")
def upload(client) -> str:
    return client.uploads.create(bytes=3, filename="x.jsonl", mime_type="application/jsonl", purpose="batch").id


def assert_error(response, status: int, param: str | None, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": "model_not_found" if param == "model" else None,
        }
    }


@pytest.mark.parametrize("path,body,status,param,message", JSON_BODIES)
def test_json_bodies(http, upload, path, body, status, param, message):
    response = http.post(
        path.format(upload=upload), content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    assert_error(response, status, param, message.replace("{upload}", upload))


@pytest.mark.parametrize("path,status,param,message", QUERIES)
def test_queries_and_ids(http, path, status, param, message):
    assert_error(http.get(path), status, param, message)


@pytest.mark.parametrize("path,files,fields,status,param,message", FORMS)
def test_forms(http, upload, path, files, fields, status, param, message):
    assert_error(http.post(path.format(upload=upload), files=files, data=fields), status, param, message)


def test_a_batch_input_of_another_purpose(http, client):
    import io

    file = client.files.create(file=("notes.jsonl", io.BytesIO(b"{}\n")), purpose="user_data")
    assert_error(
        http.post("/v1/batches", json={**BATCH, "input_file_id": file.id}),
        400,
        "input_file_id",
        f"File '{file.id}' has purpose 'user_data'; a batch input must be uploaded with purpose 'batch'.",
    )
