"""/v1/batches and /v1/models. Each action validates its input serializer, calls a service (or a selector) and
serializes the answer. Two actions are extensions, not in OpenAI's API: a batch's result lines so far
(`results`) and its changes as server-sent events (`events`)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from batches_api import live, selectors, services
from batches_api.models import Batch
from batches_api.serializers import (
    RESULTS_LIMIT_DEFAULT,
    RESULTS_LIMIT_MAX,
    BatchResultsParamsSerializer,
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
from batchserver.streams import peer_closed
from batchserver.views import caller_project

RESULTS_CONTENT_TYPE = "application/x-ndjson"


def _header(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, str, OpenApiParameter.HEADER, response=[200], description=description)


RESULTS_HEADERS = [
    _header("x-next-cursor", "Pass it as `after` to get the lines that follow this page (`after` itself if empty)."),
    _header("x-has-more", "`true` when more lines were there already past this page: ask again at once."),
    _header(
        "x-batch-status",
        "The batch's status before the lines were read. Once it is completed, failed, expired or cancelled and "
        "x-has-more is `false`, every line has been sent.",
    ),
]


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

    @extend_schema(
        summary="Stream the result lines of a batch so far (extension)",
        description=(
            "Not in OpenAI's API. The output and error lines of the requests that have ended, in the order they "
            "ended, as JSON Lines: each line is byte for byte the line the batch's output file (a response) or "
            "error file (a request that never ran) holds once it is finalized. Follow a batch by passing each "
            "page's x-next-cursor as `after`: no line is skipped or repeated. "
            f"`limit`: 1-{RESULTS_LIMIT_MAX:,} lines (default {RESULTS_LIMIT_DEFAULT:,})."
        ),
        parameters=[BatchResultsParamsSerializer, *RESULTS_HEADERS],
        responses={
            (200, RESULTS_CONTENT_TYPE): OpenApiResponse(OpenApiTypes.STR, description="One JSON object per line."),
            **ERRORS,
        },
    )
    @action(detail=True, methods=["get"])
    def results(self, request, pk: str):
        params = validated(BatchResultsParamsSerializer, request.query_params)
        batch = services.batch_get(project=caller_project(request), batch_id=pk)
        page = selectors.results_page(batch=batch, after=params["after"], limit=params["limit"])
        response = StreamingHttpResponse(page.lines(), content_type=RESULTS_CONTENT_TYPE)
        response["x-next-cursor"] = str(page.last)
        response["x-has-more"] = "true" if page.has_more else "false"
        response["x-batch-status"] = page.status
        return response

    @extend_schema(
        summary="Follow a batch's status and request counts as server-sent events (extension)",
        description=(
            "Not in OpenAI's API. A text/event-stream: the batch object (the JSON of GET /v1/batches/{id}) as "
            "each event's data, first as it is now, then each time its status or request_counts change; every "
            "status the batch goes through is sent. The stream closes after a final status (completed, failed, "
            "expired, cancelled), and after a while in any case: reconnect with the last event's id as "
            "Last-Event-ID (EventSource does, after the `retry` the stream sets) to get what changed since. A "
            "client that has the final state already gets a 204."
        ),
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                str,
                OpenApiParameter.HEADER,
                description="The id of the last event received: the stream sends what changed since.",
            )
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="Server-sent events."),
            204: OpenApiResponse(description="The client has the final state already: nothing more will come."),
            **ERRORS,
        },
    )
    @action(detail=True, methods=["get"])
    def events(self, request, pk: str):
        batch = services.batch_get(project=caller_project(request), batch_id=pk)
        sock = request.META.get("gunicorn.socket")
        stream = live.open_stream(
            batch_id=batch.id,
            last_event_id=request.headers.get("Last-Event-ID"),
            client_gone=lambda: peer_closed(sock),
        )
        if stream is None:
            return HttpResponse(status=204)
        response = StreamingHttpResponse(stream, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
        return response


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
