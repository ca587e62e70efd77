"""The OpenAPI schema describes exactly the objects the API sends."""

from __future__ import annotations

from django.utils import timezone

from batches_api.models import Batch
from files_api.models import File, Upload


def test_schema_components_list_exactly_the_keys_the_api_sends(server, http):
    import httpx

    schema = httpx.get(f"{server}/v1/openapi.json").json()
    components = schema["components"]["schemas"]
    now = timezone.now()
    sent = {
        "Batch": Batch(id="batch_x", endpoint="/v1/chat/completions", input_file_id="file-x", created_at=now,
                       expires_at=now).to_dict(),
        "FileObject": File(id="file-x", purpose="batch", filename="a.jsonl", bytes=1, created_at=now).to_dict(),
        "Upload": Upload(id="upload_x", filename="a", purpose="batch", bytes=1, mime_type="x", created_at=now,
                         expires_at=now).to_dict(),
    }
    for name, body in sent.items():
        assert set(components[name]["properties"]) == set(body), name
    assert set(components["BatchUsage"]["properties"]) == set(sent["Batch"]["usage"])
    for path in ("/v1/files", "/v1/files/{id}/content", "/v1/uploads/{id}/complete", "/v1/batches",
                 "/v1/batches/{id}/cancel", "/v1/models"):
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
