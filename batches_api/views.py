"""/v1/batches and /v1/models. Each action validates its input serializer, calls a service and serializes the
answer."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from batches_api import services
from batches_api.models import Batch
from batches_api.serializers import (
    BatchSerializer,
    CreateBatchSerializer,
    ListBatchesParamsSerializer,
    ListBatchesResponseSerializer,
    ListModelsResponseSerializer,
    ModelObjectSerializer,
)
from batchserver.errors import NotFound
from batchserver.openapi import ERROR, ERRORS
from batchserver.pagination import cursor_page, list_page
from batchserver.serializers import validated
from batchserver.views import caller_project


class BatchViewSet(viewsets.ViewSet):
    lookup_value_regex = "[^/]+"

    @extend_schema(summary="Create a batch", request=CreateBatchSerializer, responses={200: BatchSerializer, **ERRORS})
    def create(self, request):
        params = validated(CreateBatchSerializer, request.data)
        return Response(BatchSerializer(services.batch_create(project=caller_project(request), **params)).data)

    @extend_schema(
        summary="List batches",
        parameters=[ListBatchesParamsSerializer],
        responses={200: ListBatchesResponseSerializer, **ERRORS},
    )
    def list(self, request):
        params = validated(ListBatchesParamsSerializer, request.query_params)
        return Response(
            cursor_page(
                Batch.objects.filter(project=caller_project(request)),
                after=params.get("after"),
                limit=params["limit"],
                order="desc",
                serializer=ListBatchesResponseSerializer,
            )
        )

    @extend_schema(summary="Retrieve a batch", responses={200: BatchSerializer, **ERRORS})
    def retrieve(self, request, pk: str):
        return Response(BatchSerializer(services.batch_get(project=caller_project(request), batch_id=pk)).data)

    @extend_schema(summary="Cancel a batch", request=None, responses={200: BatchSerializer, 409: ERROR, **ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk: str):
        batch = services.batch_get(project=caller_project(request), batch_id=pk)
        return Response(BatchSerializer(services.batch_cancel(batch=batch)).data)


def served_model(name: str) -> dict:
    """A served model as ModelObjectSerializer reads it: its settings, and its name as `id`."""
    return {"id": name, **settings.BATCHSERVER_MODELS[name]}


class ModelViewSet(viewsets.ViewSet):
    lookup_value_regex = "[^/]+"  # model ids may hold dots; names with a slash are not served here

    @extend_schema(summary="List models", responses={200: ListModelsResponseSerializer, **ERRORS})
    def list(self, request):
        return Response(list_page(ListModelsResponseSerializer, map(served_model, settings.BATCHSERVER_MODELS)))

    @extend_schema(summary="Retrieve a model", responses={200: ModelObjectSerializer, **ERRORS})
    def retrieve(self, request, pk: str):
        if pk not in settings.BATCHSERVER_MODELS:
            raise NotFound(f"The model '{pk}' does not exist", param="model", code="model_not_found")
        return Response(ModelObjectSerializer(served_model(pk)).data)
