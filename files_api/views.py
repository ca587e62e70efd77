"""/v1/files and /v1/uploads. Each action validates its input serializer, calls a service and serializes the
answer."""

from __future__ import annotations

from typing import cast

from django.conf import settings
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from batchserver.openapi import ERROR, ERRORS, FILE_CONTENT
from batchserver.pagination import cursor_page
from batchserver.parsers import JSONParser, reject_oversized_body
from batchserver.serializers import validated
from batchserver.views import caller_project
from files_api import services
from files_api.models import File
from files_api.serializers import (
    AddUploadPartSerializer,
    CompleteUploadSerializer,
    CreateFileSerializer,
    CreateUploadSerializer,
    FileDeletedSerializer,
    FileObjectSerializer,
    ListFilesParamsSerializer,
    ListFilesResponseSerializer,
    UploadPartSerializer,
    UploadSerializer,
)


class FileViewSet(viewsets.ViewSet):
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    lookup_value_regex = "[^/]+"

    @extend_schema(
        summary="Upload a file",
        request={"multipart/form-data": CreateFileSerializer},
        responses={200: FileObjectSerializer, 413: ERROR, **ERRORS},
    )
    def create(self, request):
        reject_oversized_body(request, settings.BATCHSERVER_MAX_FILE_BYTES)
        params = validated(CreateFileSerializer, request.data)
        return Response(FileObjectSerializer(services.file_create(project=caller_project(request), **params)).data)

    @extend_schema(
        summary="List files",
        parameters=[ListFilesParamsSerializer],
        responses={200: ListFilesResponseSerializer, **ERRORS},
    )
    def list(self, request):
        params = validated(ListFilesParamsSerializer, request.query_params)
        files = File.objects.filter(project=caller_project(request))
        if purpose := params.get("purpose"):
            files = files.filter(purpose=purpose)
        return Response(
            cursor_page(
                files,
                after=params.get("after"),
                limit=params["limit"],
                order=params["order"],
                serializer=ListFilesResponseSerializer,
            )
        )

    @extend_schema(summary="Retrieve a file", responses={200: FileObjectSerializer, **ERRORS})
    def retrieve(self, request, pk: str):
        return Response(FileObjectSerializer(services.file_get(project=caller_project(request), file_id=pk)).data)

    @extend_schema(summary="Delete a file", responses={200: FileDeletedSerializer, 409: ERROR, **ERRORS})
    def destroy(self, request, pk: str):
        file = services.file_get(project=caller_project(request), file_id=pk)
        services.file_delete(file=file)
        return Response(FileDeletedSerializer(file).data)

    @extend_schema(summary="Retrieve a file's content", responses=FILE_CONTENT)
    @action(detail=True, methods=["get"])
    def content(self, request, pk: str):
        file = services.file_get(project=caller_project(request), file_id=pk)
        response = StreamingHttpResponse(services.file_iter_chunks(file), content_type="application/octet-stream")
        response["Content-Length"] = str(file.bytes)
        # RFC 6266: a quoted ASCII name, or filename*=utf-8''… for any other (Django escapes and encodes it).
        # (str whenever as_attachment is True; the stubs say str | None for both cases)
        response["Content-Disposition"] = cast(str, content_disposition_header(True, file.filename))
        return response


class UploadViewSet(viewsets.ViewSet):
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    lookup_value_regex = "[^/]+"

    @extend_schema(
        summary="Create an upload",
        request=CreateUploadSerializer,
        responses={200: UploadSerializer, 413: ERROR, **ERRORS},
    )
    def create(self, request):
        params = validated(CreateUploadSerializer, request.data)
        return Response(UploadSerializer(services.upload_create(project=caller_project(request), **params)).data)

    @extend_schema(
        summary="Add a part",
        request={"multipart/form-data": AddUploadPartSerializer},
        responses={200: UploadPartSerializer, 409: ERROR, 413: ERROR, **ERRORS},
    )
    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def parts(self, request, pk: str):
        reject_oversized_body(request, settings.BATCHSERVER_MAX_UPLOAD_PART_BYTES)
        # Looked up first: a part of an unknown Upload is refused before its body (up to 64 MB) is read.
        upload = services.upload_get(project=caller_project(request), upload_id=pk)
        params = validated(AddUploadPartSerializer, request.data)
        return Response(UploadPartSerializer(services.upload_add_part(upload=upload, **params)).data)

    @extend_schema(
        summary="Complete an upload",
        request=CompleteUploadSerializer,
        responses={200: UploadSerializer, 409: ERROR, **ERRORS},
    )
    @action(detail=True, methods=["post"], parser_classes=[JSONParser])
    def complete(self, request, pk: str):
        params = validated(CompleteUploadSerializer, request.data)
        upload = services.upload_get(project=caller_project(request), upload_id=pk)
        return Response(UploadSerializer(services.upload_complete(upload=upload, **params)).data)

    @extend_schema(summary="Cancel an upload", request=None, responses={200: UploadSerializer, 409: ERROR, **ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk: str):
        upload = services.upload_get(project=caller_project(request), upload_id=pk)
        return Response(UploadSerializer(services.upload_cancel(upload=upload)).data)
