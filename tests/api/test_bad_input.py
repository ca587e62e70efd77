"""Bad input: a clear 4xx in OpenAI's envelope, never a 500, and nothing stored is lost or changed."""

from __future__ import annotations

import io
import json
import socket
from urllib.parse import urlparse

import openai
import pytest

from tests.conftest import wait_for_status
from tests.helpers import request_line, upload_batch_file


def assert_error(response, status: int, param: str | None = "any") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"] == "invalid_request_error"
    if param != "any":
        assert error["param"] == param
    return error


@pytest.fixture
def stored(db_access):
    """A snapshot of every stored file and batch, to prove a bad request changed nothing."""
    from batches_api.models import Batch
    from files_api.models import File

    def snapshot():  # statuses of earlier batches may move on in the background; what a request stores may not
        return (
            sorted(
                File.objects.exclude(purpose="batch_output").values_list(
                    "id", "bytes", "purpose", "filename", "expires_at"
                )
            ),
            sorted(Batch.objects.values_list("id", "input_file_id", "endpoint", "metadata")),
        )

    return snapshot


def test_malformed_json_body(http, stored):
    before = stored()
    response = http.post("/v1/batches", content=b'{"input_file_id": ', headers={"Content-Type": "application/json"})
    assert "parse" in assert_error(response, 400)["message"]
    assert stored() == before


def test_json_body_that_is_not_an_object(http, stored):
    before = stored()
    assert_error(http.post("/v1/batches", json=["a", "b"]), 400)
    assert stored() == before


def test_wrong_content_type(http, stored):
    before = stored()
    response = http.post("/v1/batches", content=b"input_file_id=x", headers={"Content-Type": "text/plain"})
    assert_error(response, 415)
    assert stored() == before


def test_unknown_ids_are_404(http):
    for path in (
        "/v1/files/file-doesnotexist",
        "/v1/files/file-doesnotexist/content",
        "/v1/batches/batch_doesnotexist",
        "/v1/uploads/upload_nope/cancel",
    ):
        method = http.post if path.endswith("cancel") else http.get
        assert_error(method(path), 404)


def test_ids_of_the_wrong_kind_are_404(http, client, stored):
    file = upload_batch_file(client, [request_line("a")])
    before = stored()
    assert_error(http.get(f"/v1/batches/{file.id}"), 404)
    assert_error(http.post(f"/v1/batches/{file.id}/cancel"), 404)
    error = assert_error(
        http.post(
            "/v1/batches",
            json={"input_file_id": "batch_123", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        ),
        404,
    )
    assert error["param"] == "input_file_id"
    assert stored() == before


def test_unknown_path_and_method(http):
    assert "Invalid URL" in assert_error(http.get("/v1/fine_tuning/jobs"), 404)["message"]
    assert_error(http.put("/v1/batches"), 405)


def test_batch_on_a_file_that_is_not_purpose_batch(client, stored):
    file = client.files.create(file=("notes.jsonl", io.BytesIO(b"{}\n")), purpose="user_data")
    before = stored()
    with pytest.raises(openai.BadRequestError) as raised:
        client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert raised.value.param == "input_file_id"
    assert "purpose 'batch'" in raised.value.message
    assert stored() == before


def test_batch_on_a_deleted_file(client, stored):
    file = upload_batch_file(client, [request_line("a")])
    client.files.delete(file.id)
    before = stored()
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert stored() == before


def test_deleting_the_input_of_a_running_batch_is_refused(client, stored):
    file = upload_batch_file(client, [request_line("a")])
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for_status(client, batch.id, {"in_progress"}, timeout=30)
    before = stored()
    with pytest.raises(openai.ConflictError) as raised:
        client.files.delete(file.id)
    assert batch.id in raised.value.message
    assert client.files.content(file.id).read()  # still there, bytes included
    assert stored() == before
    client.batches.cancel(batch.id)


@pytest.mark.parametrize(
    "endpoint,window,param",
    [
        ("/v1/moderations", "24h", "endpoint"),
        ("/v1/nope", "24h", "endpoint"),
        ("/v1/chat/completions", "48h", "completion_window"),
    ],
)
def test_unsupported_endpoint_or_window(client, stored, endpoint, window, param):
    file = upload_batch_file(client, [request_line("a")])
    before = stored()
    with pytest.raises(openai.BadRequestError) as raised:
        client.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window=window)
    assert raised.value.param == param
    if param == "endpoint":
        assert "/v1/chat/completions" in raised.value.message  # names the allowed ones
    assert stored() == before


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
        {"k": 1},
        ["not", "an", "object"],
    ],
)
def test_metadata_over_openai_limits(client, stored, metadata):
    file = upload_batch_file(client, [request_line("a")])
    before = stored()
    with pytest.raises(openai.BadRequestError) as raised:
        client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h", metadata=metadata
        )
    assert raised.value.param == "metadata"
    assert stored() == before


def test_missing_parameters(http, stored):
    before = stored()
    assert (
        assert_error(
            http.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "completion_window": "24h"}), 400
        )["param"]
        == "input_file_id"
    )
    assert assert_error(http.post("/v1/files", data={"purpose": "batch"}), 400)["param"] == "file"
    assert assert_error(http.post("/v1/files", files={"file": ("a.jsonl", b"{}")}), 400)["param"] == "purpose"
    assert (
        assert_error(http.post("/v1/files", files={"file": ("a.jsonl", b"{}")}, data={"purpose": "batch_output"}), 400)[
            "param"
        ]
        == "purpose"
    )
    assert stored() == before


@pytest.mark.parametrize(
    "filename,content,needle",
    [
        ("input.csv", b'{"a": 1}\n', ".jsonl"),
        ("input.jsonl", b'{"a": "\xff\xfe"}\n', "UTF-8"),
        ("input.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ],
)
def test_batch_inputs_must_be_utf8_jsonl(client, stored, filename, content, needle):
    before = stored()
    with pytest.raises(openai.BadRequestError) as raised:
        client.files.create(file=(filename, io.BytesIO(content)), purpose="batch")
    assert needle in raised.value.message
    assert stored() == before


def answer_to_headers_only(server: str, key: str, path: str, content_type: str, length: int) -> str:
    """Send a request's headers and at most a byte of its body; return what the server answers meanwhile."""
    url = urlparse(server)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n{{".encode()
        )
        head = b""
        while b'"error"' not in head and (chunk := sock.recv(65536)):
            head += chunk
    return head.decode(errors="replace")


def test_oversized_upload_is_413_before_the_body_is_read(server, keys, stored):
    before = stored()
    head = answer_to_headers_only(server, keys["alice"], "/v1/files", "multipart/form-data; boundary=xyz", 600_000_000)
    assert head.startswith("HTTP/1.1 413"), head
    assert '"error"' in head
    assert stored() == before


def test_upload_larger_than_the_limits(client, stored):
    before = stored()
    with pytest.raises(openai.APIStatusError) as raised:
        client.uploads.create(
            bytes=300 * 1024 * 1024, filename="big.jsonl", mime_type="application/jsonl", purpose="batch"
        )
    assert raised.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as raised:
        client.uploads.create(
            bytes=9 * 1024**3, filename="big.bin", mime_type="application/octet-stream", purpose="assistants"
        )
    assert raised.value.status_code == 413
    assert stored() == before


def test_bad_pagination_parameters(http):
    assert assert_error(http.get("/v1/batches?limit=0"), 400)["param"] == "limit"
    assert assert_error(http.get("/v1/batches?limit=abc"), 400)["param"] == "limit"
    assert assert_error(http.get("/v1/files?order=sideways"), 400)["param"] == "order"
    assert assert_error(http.get("/v1/batches?after=batch_unknown"), 400)["param"] == "after"


def test_upload_parts_and_complete_bad_input(client, http, stored):
    upload = client.uploads.create(bytes=3, filename="x.jsonl", mime_type="application/jsonl", purpose="batch")
    before = stored()
    assert assert_error(http.post(f"/v1/uploads/{upload.id}/parts", data={"x": "y"}), 400)["param"] == "data"
    assert (
        assert_error(http.post(f"/v1/uploads/{upload.id}/complete", json={"part_ids": "nope"}), 400)["param"]
        == "part_ids"
    )
    assert (
        assert_error(http.post(f"/v1/uploads/{upload.id}/complete", json={"part_ids": ["part_x"]}), 400)["param"]
        == "part_ids"
    )
    assert_error(
        http.post("/v1/uploads", json={"bytes": "3", "filename": "x.jsonl", "mime_type": "a", "purpose": "batch"}), 400
    )
    assert stored() == before


def test_error_bodies_are_json_even_for_huge_garbage(http, stored):
    before = stored()
    response = http.post(
        "/v1/batches",
        content=json.dumps({"metadata": {"k": "v" * 100_000}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400)
    assert stored() == before


# ------------------------------------------------------------------------------------ JSON bodies, read safely
def json_endpoints(client) -> list[str]:
    upload = client.uploads.create(bytes=3, filename="x.jsonl", mime_type="application/jsonl", purpose="batch")
    return ["/v1/batches", "/v1/uploads", f"/v1/uploads/{upload.id}/complete"]


def post_json_text(http, path: str, text: str):
    return http.post(path, content=text.encode(), headers={"Content-Type": "application/json"})


def test_deeply_nested_json_is_a_400_on_every_json_endpoint(http, client, stored):
    before = stored()
    for path in json_endpoints(client):
        error = assert_error(post_json_text(http, path, "[" * 100_000 + "]" * 100_000), 400)
        assert "nested" in error["message"] and "64" in error["message"]
    assert stored() == before


def test_nesting_within_the_limit_and_brackets_inside_strings_are_fine(http, stored):
    before = stored()
    nested = "[" * 60 + "]" * 60
    brackets_in_a_string = json.dumps(
        {"input_file_id": "[" * 1000, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    )
    assert (
        assert_error(post_json_text(http, "/v1/batches", nested), 400)["message"]
        == "The request body must be a JSON object."
    )
    assert_error(post_json_text(http, "/v1/batches", brackets_in_a_string), 404, param="input_file_id")
    assert stored() == before


def test_json_body_over_the_limit_is_413_before_it_is_read(server, keys, stored):
    before = stored()
    head = answer_to_headers_only(server, keys["alice"], "/v1/batches", "application/json", 5_000_000)
    assert head.startswith("HTTP/1.1 413"), head
    assert "4194304 bytes" in head
    assert stored() == before


def test_json_body_without_a_length_is_read_only_up_to_the_limit(settings):
    from batchserver.errors import TooLarge
    from batchserver.parsers import JSONParser

    settings.BATCHSERVER_MAX_JSON_BODY_BYTES = 1000
    endless = io.BytesIO(b"[" + b"1," * 1_000_000 + b"1]")
    with pytest.raises(TooLarge):
        JSONParser().parse(endless, "application/json", {})
    assert endless.tell() == 1001


@pytest.mark.parametrize(
    "body",
    [
        b'{"k": "\\ud800"}',
        b'{"\\udc00": 1}',
        b'["\\u0000"]',
        b"[" * 65 + b"]" * 65,
        b'{"n": 1e400}',
        b'{"n": 18446744073709551616}',
    ],
)
def test_the_json_parser_refuses_what_a_database_cannot_store_whatever_the_database(body):
    """Checked on the parsed JSON, not left to the database: SQLite stores lone surrogates and breaks later."""
    from batchserver.errors import InvalidRequest
    from batchserver.parsers import JSONParser

    with pytest.raises(InvalidRequest):
        JSONParser().parse(io.BytesIO(body), "application/json", {})


def test_form_fields_over_django_limit_are_413_in_openai_shape(http, stored):
    before = stored()
    response = http.post(
        "/v1/files",
        content=b"purpose=" + b"x" * (11 * 1024 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 413)
    assert stored() == before


@pytest.mark.parametrize("metadata", [{"\ud800": "value"}, {"key": "\udfff"}, {"key": "ok \ud83d"}])
def test_lone_surrogates_in_metadata_are_a_400(http, client, stored, metadata):
    file = upload_batch_file(client, [request_line("a")])
    before = stored()
    body = json.dumps(
        {"input_file_id": file.id, "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": metadata}
    )  # ensure_ascii: the surrogate travels as a \\u escape, as a client sends it
    assert "surrogate" in assert_error(post_json_text(http, "/v1/batches", body), 400)["message"]
    assert stored() == before


def test_surrogate_pairs_are_ordinary_characters(http, client):
    file = upload_batch_file(client, [request_line("a")])
    body = json.dumps(
        {
            "input_file_id": file.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"emoji": "\U0001f600"},
        }
    )
    response = post_json_text(http, "/v1/batches", body)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"emoji": "\U0001f600"}
    client.batches.cancel(response.json()["id"])


@pytest.mark.parametrize(
    "body",
    [
        {"input_file_id": "file-\u0000"},
        {
            "input_file_id": "file-x",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"k": "v\u0000"},
        },
    ],
)
def test_nul_characters_in_json_strings_are_a_400(http, stored, body):
    before = stored()
    assert "NUL" in assert_error(post_json_text(http, "/v1/batches", json.dumps(body)), 400)["message"]
    assert stored() == before


@pytest.mark.parametrize(
    "path,text",
    [
        ("/v1/batches", '{"input_file_id": ' + "7" * 5000 + "}"),
        (
            "/v1/uploads",
            '{"bytes": 99999999999999999999, "filename": "x.jsonl", "mime_type": "application/jsonl", '
            '"purpose": "batch"}',
        ),
        (
            "/v1/uploads",
            '{"bytes": 3, "filename": "x.jsonl", "mime_type": "application/jsonl", "purpose": "batch", '
            '"expires_after": {"anchor": "created_at", "seconds": 1e400}}',
        ),
    ],
)
def test_numbers_out_of_range_are_a_400(http, stored, path, text):
    before = stored()
    error = assert_error(post_json_text(http, path, text), 400)
    assert "out of range" in error["message"] and "set_int_max_str_digits" not in error["message"]
    assert stored() == before


def test_json_in_a_form_field_is_read_as_safely_as_a_body(http, stored):
    before = stored()
    for value in ("[" * 100_000 + "]" * 100_000, '{"anchor": "created_at", "seconds": 1e400}'):
        response = http.post(
            "/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "user_data", "expires_after": value}
        )
        assert_error(response, 400, param="expires_after")
    assert stored() == before


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files/file-%00",
        "/v1/files?after=%00",
        "/v1/files?purpose=batch%00",
        "/v1/batches/batch_%00",
        "/v1/batches?after=%00",
    ],
)
def test_nul_characters_in_the_url_are_a_400(http, path):
    assert "NUL" in assert_error(http.get(path), 400)["message"]
