"""What /v1/openapi.json says that no serializer can: the API key scheme, closed objects, the responses every
operation shares (errors) and the file content response. Each view declares its own request and response
serializers (extend_schema)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes

from batchserver.serializers import ErrorResponseSerializer


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "batchserver.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer sk-bs-…`"}


class ClosedObject(OpenApiSerializerExtension):
    """An object the API sends has exactly the keys of its serializer: `additionalProperties: false`."""

    target_class = "batchserver.serializers.ObjectSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


def inline_enums(result: dict, **kwargs) -> dict:
    """The schema's postprocessing (SPECTACULAR_SETTINGS): drf-spectacular marks each enum with an id for naming
    it as a component; ours stay inline, so the marks go."""
    pending = [result]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            node.pop("x-spec-enum-id", None)
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return result


ERROR = ErrorResponseSerializer
ERRORS = {400: ERROR, 401: ERROR, 404: ERROR, 429: ERROR}
FILE_CONTENT = {(200, "application/octet-stream"): OpenApiTypes.BINARY, 401: ERROR, 404: ERROR}
