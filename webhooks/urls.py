"""Routes of /v1/webhook_endpoints: OpenAI updates an endpoint with a POST to its own URL, which no router maps."""

from django.urls import path

from webhooks.views import WebhookEndpointViewSet, WebhookEventTypeView

urlpatterns = [
    path(
        "webhook_endpoints",
        WebhookEndpointViewSet.as_view({"get": "list", "post": "create"}),
        name="webhook-endpoint-list",
    ),
    path(
        "webhook_endpoints/<str:pk>",
        WebhookEndpointViewSet.as_view({"get": "retrieve", "post": "update", "delete": "destroy"}),
        name="webhook-endpoint-detail",
    ),
    path(
        "webhook_endpoints/<str:pk>/rotate_secret",
        WebhookEndpointViewSet.as_view({"post": "rotate_secret"}),
        name="webhook-endpoint-rotate-secret",
    ),
    path(
        "webhook_endpoints/<str:pk>/test",
        WebhookEndpointViewSet.as_view({"post": "test"}),
        name="webhook-endpoint-test",
    ),
    path("webhook_event_types", WebhookEventTypeView.as_view(), name="webhook-event-types"),
]
