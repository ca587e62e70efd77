"""/v1/openapi.json describes exactly what the API sends: real answers of the live server are validated against the
schema it serves, whose objects are closed (every property required, no other allowed) and whose enums are
complete. A wrong type, a missing or extra key, a missing enum value or a wrong nullability fails here. The same
answers are also read, strictly, as the official SDK's types: the schema and OpenAI's objects agree."""

from __future__ import annotations

import jsonschema
import pytest
from openai.types import Batch, FileDeleted, FileObject, Model
from openai.types.shared import ErrorObject
from openai.types.upload import Upload
from openai.types.uploads import UploadPart

from tests.conftest import wait_for_status
from tests.helpers import jsonl, request_line, upload_batch_file


@pytest.fixture(scope="module")
def schema(http) -> dict:
    return http.get("/v1/openapi.json").json()


def json_schema(node):
    """An OpenAPI 3.0 schema as JSON Schema: `nullable: true` (a keyword of OpenAPI 3.0 alone, which JSON Schema
    validators ignore) becomes "or null", on typed schemas and on references alike."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") is True else converted


def check(schema: dict, method: str, path: str, response) -> dict:
    """Validate the JSON body of `response` against what the schema says `method path` answers with its status."""
    declared = schema["paths"][path][method]["responses"][str(response.status_code)]["content"]["application/json"]
    validator = jsonschema.Draft4Validator(
        {"allOf": [json_schema(declared["schema"])], "components": json_schema(schema["components"])}
    )
    body = response.json()
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
        for error in validator.iter_errors(body)
    ]
    assert not errors, f"{method.upper()} {path} → {response.status_code} does not match the schema:\n" + "\n".join(
        errors
    )
    return body


def as_sdk(sdk_type, *objects: dict) -> None:
    """Each object is one of the SDK's `sdk_type`, in pydantic's strict mode (the text "6" is not the integer 6)."""
    for item in objects:
        sdk_type.model_validate(item, strict=True)


def test_batches_validating_failed_listed_and_cancelled(schema, http, client):
    file = upload_batch_file(client, [request_line("a")])
    created = check(
        schema,
        "post",
        "/v1/batches",
        http.post(
            "/v1/batches",
            json={
                "input_file_id": file.id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"job": "schema"},
            },
        ),
    )
    assert created["status"] == "validating" and created["errors"] is None
    retrieved = check(schema, "get", "/v1/batches/{id}", http.get(f"/v1/batches/{created['id']}"))
    cancelled = check(schema, "post", "/v1/batches/{id}/cancel", http.post(f"/v1/batches/{created['id']}/cancel"))
    assert cancelled["status"] in ("cancelling", "cancelled")

    bad = client.files.create(
        file=("bad.jsonl", jsonl([b"{not json", request_line("b", model="gpt-7")])), purpose="batch"
    )
    failing = client.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for_status(client, failing.id, {"failed"}, timeout=30)
    failed = check(schema, "get", "/v1/batches/{id}", http.get(f"/v1/batches/{failing.id}"))
    assert [error["code"] for error in failed["errors"]["data"]] == ["invalid_json_line", "model_not_found"]

    page = check(schema, "get", "/v1/batches", http.get("/v1/batches", params={"limit": 1}))
    assert page["data"][0]["id"] == page["first_id"] == page["last_id"] and page["has_more"] is True
    as_sdk(Batch, created, retrieved, cancelled, failed, *page["data"])


def test_files_object_list_and_deleted(schema, http):
    created = check(
        schema,
        "post",
        "/v1/files",
        http.post("/v1/files", files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "batch"}),
    )
    plain = check(
        schema,
        "post",
        "/v1/files",
        http.post("/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "user_data"}),
    )
    assert created["expires_at"] is not None and plain["expires_at"] is None
    check(schema, "get", "/v1/files/{id}", http.get(f"/v1/files/{created['id']}"))
    page = check(schema, "get", "/v1/files", http.get("/v1/files", params={"limit": 1}))
    assert len(page["data"]) == 1 and page["first_id"] == page["last_id"]
    empty = check(schema, "get", "/v1/files", http.get("/v1/files", params={"purpose": "vision"}))
    assert empty["data"] == [] and empty["first_id"] is None
    deleted = check(schema, "delete", "/v1/files/{id}", http.delete(f"/v1/files/{created['id']}"))
    as_sdk(FileObject, created, plain, *page["data"])
    as_sdk(FileDeleted, deleted)


def test_uploads_pending_with_parts_completed_and_cancelled(schema, http):
    body = {"bytes": 6, "filename": "parts.jsonl", "mime_type": "application/jsonl", "purpose": "batch"}
    upload = check(schema, "post", "/v1/uploads", http.post("/v1/uploads", json=body))
    assert upload["status"] == "pending" and upload["file"] is None
    parts = [
        check(
            schema,
            "post",
            "/v1/uploads/{id}/parts",
            http.post(f"/v1/uploads/{upload['id']}/parts", files={"data": ("part", data)}),
        )
        for data in (b"{}\n", b"{}\n")
    ]
    completed = check(
        schema,
        "post",
        "/v1/uploads/{id}/complete",
        http.post(f"/v1/uploads/{upload['id']}/complete", json={"part_ids": [part["id"] for part in parts]}),
    )
    assert completed["status"] == "completed" and completed["file"]["bytes"] == 6
    other = http.post("/v1/uploads", json=body).json()
    cancelled = check(schema, "post", "/v1/uploads/{id}/cancel", http.post(f"/v1/uploads/{other['id']}/cancel"))
    assert cancelled["status"] == "cancelled"
    as_sdk(Upload, upload, completed, cancelled)
    as_sdk(UploadPart, *parts)


def test_models(schema, http):
    page = check(schema, "get", "/v1/models", http.get("/v1/models"))
    model = check(schema, "get", "/v1/models/{id}", http.get(f"/v1/models/{page['data'][0]['id']}"))
    as_sdk(Model, model, *page["data"])


def test_error_bodies(schema, http, server):
    import httpx

    for method, path, response in [
        ("post", "/v1/batches", http.post("/v1/batches", json={})),
        ("get", "/v1/batches", http.get("/v1/batches", params={"limit": 0})),
        ("get", "/v1/batches/{id}", http.get("/v1/batches/batch_nope")),
        ("get", "/v1/models/{id}", http.get("/v1/models/gpt-7")),
        ("get", "/v1/files/{id}/content", http.get("/v1/files/file-nope/content")),
        ("get", "/v1/files", httpx.get(f"{server}/v1/files")),
    ]:
        assert response.status_code in (400, 401, 404), response.text
        as_sdk(ErrorObject, check(schema, method, path, response)["error"])


def test_the_objects_sent_are_closed_and_their_enums_complete(schema):
    from batches_api.models import Batch
    from files_api.models import File, Upload

    components = schema["components"]["schemas"]
    sent = [name for name in components if not name.endswith("Request")]
    assert {
        "Batch",
        "BatchErrors",
        "BatchError",
        "BatchRequestCounts",
        "BatchUsage",
        "FileObject",
        "FileDeleted",
        "Upload",
        "UploadPart",
        "Model",
        "ListBatchesResponse",
        "ListFilesResponse",
        "ListModelsResponse",
        "ErrorResponse",
        "Error",
    } <= set(sent)
    for name in sent:
        assert components[name]["additionalProperties"] is False, name
        assert set(components[name]["required"]) == set(components[name]["properties"]), name
        if "object" in components[name]["properties"]:
            assert len(components[name]["properties"]["object"]["enum"]) == 1, name
    assert components["Batch"]["properties"]["status"]["enum"] == Batch.Status.values
    assert components["Upload"]["properties"]["status"]["enum"] == Upload.Status.values
    assert components["FileObject"]["properties"]["purpose"]["enum"] == File.Purpose.values
    assert components["CreateFileRequest"]["properties"]["purpose"]["enum"] == list(File.UPLOAD_PURPOSES)


def test_paths_and_the_api_key_scheme(schema):
    for path in (
        "/v1/files",
        "/v1/files/{id}/content",
        "/v1/uploads/{id}/complete",
        "/v1/batches",
        "/v1/batches/{id}/cancel",
        "/v1/batches/{id}/results",
        "/v1/batches/{id}/events",
        "/v1/models",
    ):
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


def test_the_live_views_are_described_as_extensions(schema):
    results = schema["paths"]["/v1/batches/{id}/results"]["get"]
    assert results["summary"].endswith("(extension)") and "Not in OpenAI's API" in results["description"]
    assert list(results["responses"]["200"]["content"]) == ["application/x-ndjson"]
    assert set(results["responses"]["200"]["headers"]) == {"x-next-cursor", "x-has-more", "x-batch-status"}
    limit = next(p for p in results["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 10_000, 1_000)
    events = schema["paths"]["/v1/batches/{id}/events"]["get"]
    assert events["summary"].endswith("(extension)") and "Not in OpenAI's API" in events["description"]
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    assert "204" in events["responses"]
    assert any(p["name"] == "Last-Event-ID" and p["in"] == "header" for p in events["parameters"])
