"""/v1/batches and /v1/models."""

from __future__ import annotations

from django.conf import settings
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from batches_api import services
from batches_api.models import Batch
from batchserver.errors import NotFound
from batchserver.openapi import batches_schema, models_schema
from batchserver.pagination import cursor_page, list_page, parse_limit
from batchserver.views import caller_project, json_object_body


@batches_schema
class BatchViewSet(viewsets.ViewSet):
    lookup_value_regex = "[^/]+"

    def create(self, request):
        data = json_object_body(request)
        batch = services.batch_create(
            project=caller_project(request),
            input_file_id=data.get("input_file_id"),
            endpoint=data.get("endpoint"),
            completion_window=data.get("completion_window"),
            metadata=data.get("metadata"),
            output_expires_after=data.get("output_expires_after"),
        )
        return Response(batch.to_dict())

    def list(self, request):
        params = request.query_params
        return Response(cursor_page(
            Batch.objects.filter(project=caller_project(request)),
            after=params.get("after"),
            limit=parse_limit(params.get("limit"), default=20, maximum=100),
            order="desc",
            to_dict=Batch.to_dict,
        ))

    def retrieve(self, request, pk: str):
        return Response(services.batch_get(project=caller_project(request), batch_id=pk).to_dict())

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk: str):
        batch = services.batch_get(project=caller_project(request), batch_id=pk)
        return Response(services.batch_cancel(batch=batch).to_dict())


def model_to_dict(name: str, spec: dict) -> dict:
    return {"id": name, "object": "model", "created": spec["created"], "owned_by": spec["owned_by"]}


@models_schema
class ModelViewSet(viewsets.ViewSet):
    lookup_value_regex = "[^/]+"  # model ids may hold dots; names with a slash are not served here

    def list(self, request):
        return Response(list_page(model_to_dict(name, spec) for name, spec in settings.BATCHSERVER_MODELS.items()))

    def retrieve(self, request, pk: str):
        spec = settings.BATCHSERVER_MODELS.get(pk)
        if spec is None:
            raise NotFound(f"The model '{pk}' does not exist", param="model", code="model_not_found")
        return Response(model_to_dict(pk, spec))
