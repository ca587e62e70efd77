"""The shapes of the API's objects for the OpenAPI schema (/v1/openapi.json).

The wire format itself comes from each model's to_dict(); tests/api/test_openapi.py checks that these
declarations list exactly the keys to_dict() sends, so the two cannot drift apart.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers as s

from files_api.models import File


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "batchserver.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer sk-bs-…`"}


ErrorBody = inline_serializer("Error", {"error": inline_serializer("ErrorDetail", {
    "message": s.CharField(), "type": s.CharField(), "param": s.CharField(allow_null=True),
    "code": s.CharField(allow_null=True)})})

FileObject = inline_serializer("FileObject", {
    "id": s.CharField(), "object": s.CharField(), "bytes": s.IntegerField(),
    "created_at": s.IntegerField(), "expires_at": s.IntegerField(allow_null=True), "filename": s.CharField(),
    "purpose": s.CharField(), "status": s.ChoiceField(["uploaded", "processed", "error"]),
    "status_details": s.CharField(allow_null=True)})

FileDeleted = inline_serializer("FileDeleted", {
    "id": s.CharField(), "object": s.CharField(), "deleted": s.BooleanField()})

Upload = inline_serializer("Upload", {
    "id": s.CharField(), "object": s.CharField(), "bytes": s.IntegerField(),
    "created_at": s.IntegerField(), "expires_at": s.IntegerField(), "filename": s.CharField(),
    "purpose": s.CharField(), "status": s.ChoiceField(["pending", "completed", "cancelled", "expired"]),
    "file": FileObject.__class__(allow_null=True)})

UploadPart = inline_serializer("UploadPart", {
    "id": s.CharField(), "object": s.CharField(), "created_at": s.IntegerField(),
    "upload_id": s.CharField()})

_timestamp = {"allow_null": True}
Batch = inline_serializer("Batch", {
    "id": s.CharField(), "object": s.CharField(), "endpoint": s.CharField(),
    "model": s.CharField(allow_null=True),
    "errors": inline_serializer("BatchErrors", {"object": s.CharField(), "data": inline_serializer(
        "BatchError", {"code": s.CharField(), "message": s.CharField(), "param": s.CharField(allow_null=True),
                       "line": s.IntegerField(allow_null=True)}, many=True)}, allow_null=True),
    "input_file_id": s.CharField(), "completion_window": s.CharField(),
    "status": s.ChoiceField(["validating", "failed", "in_progress", "finalizing", "completed", "expired",
                             "cancelling", "cancelled"]),
    "output_file_id": s.CharField(allow_null=True), "error_file_id": s.CharField(allow_null=True),
    "created_at": s.IntegerField(),
    **{name: s.IntegerField(**_timestamp) for name in (
        "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
        "cancelling_at", "cancelled_at")},
    "request_counts": inline_serializer("BatchRequestCounts", {
        "total": s.IntegerField(), "completed": s.IntegerField(), "failed": s.IntegerField()}),
    "usage": inline_serializer("BatchUsage", {
        "input_tokens": s.IntegerField(),
        "input_tokens_details": inline_serializer("InputTokensDetails", {"cached_tokens": s.IntegerField()}),
        "output_tokens": s.IntegerField(),
        "output_tokens_details": inline_serializer("OutputTokensDetails", {"reasoning_tokens": s.IntegerField()}),
        "total_tokens": s.IntegerField()}),
    "metadata": s.DictField(child=s.CharField(), allow_null=True)})

Model = inline_serializer("Model", {
    "id": s.CharField(), "object": s.CharField(), "created": s.IntegerField(),
    "owned_by": s.CharField()})


def page(name: str, item) -> s.Serializer:
    return inline_serializer(name, {"object": s.CharField(), "data": item.__class__(many=True),
                                    "first_id": s.CharField(allow_null=True),
                                    "last_id": s.CharField(allow_null=True), "has_more": s.BooleanField()})


ERRORS = {400: ErrorBody, 401: ErrorBody, 404: ErrorBody}
UPLOAD_PURPOSES = [str(purpose) for purpose in File.UPLOAD_PURPOSES]
LIST_PARAMS = [OpenApiParameter("after", str), OpenApiParameter("limit", int)]

files_schema = extend_schema_view(
    create=extend_schema(summary="Upload a file", request={"multipart/form-data": inline_serializer(
        "FileCreate", {"file": s.FileField(), "purpose": s.ChoiceField(UPLOAD_PURPOSES)})}, responses={200: FileObject, 413: ErrorBody, **ERRORS}),
    list=extend_schema(summary="List files", parameters=[*LIST_PARAMS, OpenApiParameter("purpose", str),
                                                         OpenApiParameter("order", str, enum=["asc", "desc"])],
                       responses={200: page("FileList", FileObject), **ERRORS}),
    retrieve=extend_schema(summary="Retrieve a file", responses={200: FileObject, **ERRORS}),
    destroy=extend_schema(summary="Delete a file", responses={200: FileDeleted, 409: ErrorBody, **ERRORS}),
    content=extend_schema(summary="Retrieve a file's content", responses={(200, "application/octet-stream"): bytes}),
)
uploads_schema = extend_schema_view(
    create=extend_schema(summary="Create an upload", request=inline_serializer("UploadCreate", {
        "bytes": s.IntegerField(min_value=0), "filename": s.CharField(max_length=512),
        "mime_type": s.CharField(max_length=255), "purpose": s.ChoiceField(UPLOAD_PURPOSES)}),
        responses={200: Upload, **ERRORS}),
    parts=extend_schema(summary="Add a part", request={"multipart/form-data": inline_serializer(
        "UploadPartCreate", {"data": s.FileField()})}, responses={200: UploadPart, **ERRORS}),
    complete=extend_schema(summary="Complete an upload", request=inline_serializer("UploadComplete", {
        "part_ids": s.ListField(child=s.CharField()), "md5": s.CharField(required=False)}),
        responses={200: Upload, **ERRORS}),
    cancel=extend_schema(summary="Cancel an upload", request=None, responses={200: Upload, **ERRORS}),
)
batches_schema = extend_schema_view(
    create=extend_schema(summary="Create a batch", request=inline_serializer("BatchCreate", {
        "input_file_id": s.CharField(), "endpoint": s.CharField(), "completion_window": s.ChoiceField(["24h"]),
        "metadata": s.DictField(child=s.CharField(), required=False),
        "output_expires_after": inline_serializer("OutputExpiresAfter", {
            "anchor": s.ChoiceField(["created_at"]), "seconds": s.IntegerField()}, required=False)}),
        responses={200: Batch, **ERRORS}),
    list=extend_schema(summary="List batches", parameters=LIST_PARAMS, responses={200: page("BatchList", Batch),
                                                                                 **ERRORS}),
    retrieve=extend_schema(summary="Retrieve a batch", responses={200: Batch, **ERRORS}),
    cancel=extend_schema(summary="Cancel a batch", request=None, responses={200: Batch, 409: ErrorBody, **ERRORS}),
)
models_schema = extend_schema_view(
    list=extend_schema(summary="List models", responses={200: page("ModelList", Model), **ERRORS}),
    retrieve=extend_schema(summary="Retrieve a model", responses={200: Model, **ERRORS}),
)
