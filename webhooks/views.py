"""/v1/webhook_endpoints and /v1/webhook_event_types: what `client.webhooks` of the OpenAI SDK calls. Each action
validates its input serializer, calls a service and serializes the answer."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batchserver.errors import InvalidRequest
from batchserver.pagination import cursor_page
from batchserver.serializers import validated
from batchserver.views import caller_project
from webhooks import services
from webhooks.models import EVENT_TYPES, WebhookEndpoint
from webhooks.serializers import (
    DeletedWebhookEndpointSerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointListSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointTestResultSerializer,
    WebhookEndpointUpdateSerializer,
    WebhookEndpointWithSecretSerializer,
    WebhookEventTypeListSerializer,
    WebhookListParamsSerializer,
    WebhookRotateSecretSerializer,
    WebhookTestSerializer,
)

ERROR = OpenApiResponse(description='OpenAI\'s error envelope: {"error": {message, type, param, code}}')
ERRORS = {400: ERROR, 401: ERROR, 404: ERROR, 429: ERROR}


def endpoint_dict(endpoint: WebhookEndpoint) -> dict:
    return WebhookEndpointSerializer(endpoint).data


def with_secret(endpoint: WebhookEndpoint, secret: str) -> Response:
    return Response(WebhookEndpointWithSecretSerializer(endpoint, context={"signing_secret": secret}).data)


class WebhookEndpointViewSet(viewsets.ViewSet):
    @extend_schema(
        summary="Create a webhook endpoint",
        request=WebhookEndpointCreateSerializer,
        responses={200: WebhookEndpointWithSecretSerializer, **ERRORS},
    )
    def create(self, request: Request) -> Response:
        params = validated(WebhookEndpointCreateSerializer, request.data)
        endpoint, secret = services.endpoint_create(project=caller_project(request), **params)
        return with_secret(endpoint, secret)

    @extend_schema(
        summary="List webhook endpoints",
        parameters=[WebhookListParamsSerializer],
        responses={200: WebhookEndpointListSerializer, **ERRORS},
    )
    def list(self, request: Request) -> Response:
        params = validated(WebhookListParamsSerializer, request.query_params)
        return Response(
            cursor_page(
                WebhookEndpoint.objects.filter(project=caller_project(request)),
                after=params.get("after"),
                limit=params["limit"],
                order=params["order"],
                serializer=WebhookEndpointListSerializer,
            )
        )

    @extend_schema(summary="Retrieve a webhook endpoint", responses={200: WebhookEndpointSerializer, **ERRORS})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(endpoint_dict(services.endpoint_get(project=caller_project(request), endpoint_id=pk)))

    @extend_schema(
        summary="Update a webhook endpoint",
        operation_id="webhook_endpoints_update",
        request=WebhookEndpointUpdateSerializer,
        responses={200: WebhookEndpointSerializer, **ERRORS},
    )
    def update(self, request: Request, pk: str) -> Response:
        endpoint = services.endpoint_get(project=caller_project(request), endpoint_id=pk)
        params = validated(WebhookEndpointUpdateSerializer, request.data)
        return Response(endpoint_dict(services.endpoint_update(endpoint=endpoint, **params)))

    @extend_schema(summary="Delete a webhook endpoint", responses={200: DeletedWebhookEndpointSerializer, **ERRORS})
    def destroy(self, request: Request, pk: str) -> Response:
        endpoint = services.endpoint_get(project=caller_project(request), endpoint_id=pk)
        services.endpoint_delete(endpoint=endpoint)
        return Response(DeletedWebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        summary="Rotate a webhook endpoint's signing secret",
        request=WebhookRotateSecretSerializer,
        responses={200: WebhookEndpointWithSecretSerializer, 409: ERROR, **ERRORS},
    )
    def rotate_secret(self, request: Request, pk: str) -> Response:
        endpoint = services.endpoint_get(project=caller_project(request), endpoint_id=pk)
        params = validated(WebhookRotateSecretSerializer, request.data)
        return with_secret(*services.endpoint_rotate_secret(endpoint=endpoint, **params))

    @extend_schema(
        summary="Send a sample event to a webhook endpoint",
        request=WebhookTestSerializer,
        responses={200: WebhookEndpointTestResultSerializer, **ERRORS},
    )
    def test(self, request: Request, pk: str) -> Response:
        endpoint = services.endpoint_get(project=caller_project(request), endpoint_id=pk)
        event_type = validated(WebhookTestSerializer, request.data)["event_type"]
        outcome = services.endpoint_test(endpoint=endpoint, event_type=event_type)
        if outcome.status_code is None:
            raise InvalidRequest(
                f"The test delivery to {endpoint.url} got no answer: {outcome.error.rstrip('.')}. "
                "Check that the URL accepts POST requests from this server, then test again.",
                code="webhook_delivery_failed",
            )
        return Response(
            WebhookEndpointTestResultSerializer(
                {"webhook_endpoint_id": endpoint.id, "event_type": event_type, "status_code": outcome.status_code}
            ).data
        )


class WebhookEventTypeView(APIView):
    @extend_schema(summary="List webhook event types", responses={200: WebhookEventTypeListSerializer, **ERRORS})
    def get(self, request: Request) -> Response:
        return Response(WebhookEventTypeListSerializer({"data": EVENT_TYPES}).data)
