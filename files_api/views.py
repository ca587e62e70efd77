"""/v1/files and /v1/uploads."""

from __future__ import annotations

from django.conf import settings
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from batchserver.errors import InvalidRequest
from batchserver.openapi import files_schema, uploads_schema
from batchserver.pagination import cursor_page, parse_limit, parse_order
from batchserver.parsers import JSONParser, reject_oversized_body
from batchserver.views import caller_project, form_or_json_object, json_object_body
from files_api import services
from files_api.models import File


def _expires_after(data, name: str = "expires_after") -> int | None:
    value = form_or_json_object(data, name)
    if value is None:
        return None
    return services.check_expires_after(value.get("anchor"), value.get("seconds"), param=name)


@files_schema
class FileViewSet(viewsets.ViewSet):
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    lookup_value_regex = "[^/]+"

    def create(self, request):
        reject_oversized_body(request, settings.BATCHSERVER_MAX_FILE_BYTES)
        file = services.file_create(
            project=caller_project(request),
            content=request.FILES.get("file"),
            purpose=request.data.get("purpose"),
            expires_after=_expires_after(request.data),
        )
        return Response(file.to_dict())

    def list(self, request):
        params = request.query_params
        queryset = File.objects.filter(project=caller_project(request))
        if purpose := params.get("purpose"):
            queryset = queryset.filter(purpose=purpose)
        return Response(cursor_page(
            queryset,
            after=params.get("after"),
            limit=parse_limit(params.get("limit"), default=10000, maximum=10000),
            order=parse_order(params.get("order")),
            to_dict=File.to_dict,
        ))

    def retrieve(self, request, pk: str):
        return Response(services.file_get(project=caller_project(request), file_id=pk).to_dict())

    def destroy(self, request, pk: str):
        file = services.file_get(project=caller_project(request), file_id=pk)
        services.file_delete(file=file)
        return Response({"id": file.id, "object": "file", "deleted": True})

    @action(detail=True, methods=["get"])
    def content(self, request, pk: str):
        file = services.file_get(project=caller_project(request), file_id=pk)
        response = StreamingHttpResponse(services.file_iter_chunks(file), content_type="application/octet-stream")
        response["Content-Length"] = str(file.bytes)
        # RFC 6266: a quoted ASCII name, or filename*=utf-8''… for any other (Django escapes and encodes it).
        response["Content-Disposition"] = content_disposition_header(True, file.filename)
        return response


@uploads_schema
class UploadViewSet(viewsets.ViewSet):
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    lookup_value_regex = "[^/]+"

    def create(self, request):
        data = json_object_body(request)
        for name in ("bytes", "filename", "mime_type", "purpose"):
            if data.get(name) in (None, ""):
                raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        size = data["bytes"]
        if not isinstance(size, int) or isinstance(size, bool):
            raise InvalidRequest("Invalid 'bytes': expected an integer.", param="bytes")
        upload = services.upload_create(
            project=caller_project(request),
            filename=data["filename"],
            purpose=data["purpose"],
            size=size,
            mime_type=data["mime_type"],
            expires_after=_expires_after(data),
        )
        return Response(upload.to_dict())

    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def parts(self, request, pk: str):
        reject_oversized_body(request, settings.BATCHSERVER_MAX_UPLOAD_PART_BYTES)
        upload = services.upload_get(project=caller_project(request), upload_id=pk)
        part = services.upload_add_part(upload=upload, data=request.FILES.get("data"))
        return Response(part.to_dict())

    @action(detail=True, methods=["post"], parser_classes=[JSONParser])
    def complete(self, request, pk: str):
        data = json_object_body(request)
        part_ids = data.get("part_ids")
        if not isinstance(part_ids, list) or not all(isinstance(p, str) for p in part_ids):
            raise InvalidRequest("Invalid 'part_ids': expected a list of part ids.", param="part_ids")
        md5 = data.get("md5")
        if md5 is not None and not isinstance(md5, str):
            raise InvalidRequest("Invalid 'md5': expected a string.", param="md5")
        upload = services.upload_get(project=caller_project(request), upload_id=pk)
        return Response(services.upload_complete(upload=upload, part_ids=part_ids, md5=md5).to_dict())

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk: str):
        upload = services.upload_get(project=caller_project(request), upload_id=pk)
        return Response(services.upload_cancel(upload=upload).to_dict())
