"""The wire format of webhooks, one serializer per OpenAI object and per request body: they validate what comes in,
shape what goes out, and are what /v1/openapi.json describes. Names follow the official SDK
(openai.types.webhooks)."""

from __future__ import annotations

from rest_framework import serializers

from batchserver.serializers import (
    ChoiceField,
    ConstantField,
    ListParamsSerializer,
    ObjectSerializer,
    RequestSerializer,
    UnixTimeField,
    limit_field,
    page_serializer,
)
from webhooks.models import EVENT_TYPES
from webhooks.transport import UnsafeUrl, check_url

SUPPORTED = ", ".join(EVENT_TYPES)
NAME_MAX = 256
URL_MAX = 2048


def required(name: str, what: str) -> dict:
    """Messages that read well after the envelope's "Invalid '<name>': " prefix."""
    return {
        "required": f"this parameter is required: {what}.",
        "null": f"must not be null: {what}.",
        "blank": f"must not be empty: {what}.",
    }


def check_event_type(value: str) -> None:
    if value not in EVENT_TYPES:
        raise serializers.ValidationError(f"'{value}' is not an event type this server sends. Supported: {SUPPORTED}.")


def check_event_types(values: list[str]) -> None:
    if not values:
        raise serializers.ValidationError(f"give at least one event type. Supported: {SUPPORTED}.")
    for value in values:
        check_event_type(value)


def check_webhook_url(value: str) -> None:
    try:
        check_url(value)
    except UnsafeUrl as exc:
        raise serializers.ValidationError(str(exc)) from None


def url_field(**kwargs) -> serializers.CharField:
    return serializers.CharField(
        max_length=URL_MAX,
        validators=[check_webhook_url],
        error_messages=required("url", "the HTTPS URL that receives the deliveries"),
        **kwargs,
    )


def name_field(**kwargs) -> serializers.CharField:
    return serializers.CharField(
        max_length=NAME_MAX, error_messages=required("name", "a name for the endpoint"), **kwargs
    )


def event_types_field(**kwargs) -> serializers.ListField:
    what = f"a list of event types ({SUPPORTED})"
    return serializers.ListField(
        child=serializers.CharField(),
        validators=[check_event_types],
        error_messages={**required("event_types", what), "not_a_list": f"expected {what}."},
        **kwargs,
    )


# ------------------------------------------------------------------------------------------------ requests
class WebhookEndpointCreateSerializer(RequestSerializer):
    url = url_field()
    name = name_field()
    event_types = event_types_field()


class WebhookEndpointUpdateSerializer(RequestSerializer):
    url = url_field(required=False)
    name = name_field(required=False)
    event_types = event_types_field(required=False)


class WebhookRotateSecretSerializer(RequestSerializer):
    keep_old_secret_active_for_24_hours = serializers.BooleanField(required=False, default=False)


class WebhookTestSerializer(RequestSerializer):
    event_type = serializers.CharField(
        validators=[check_event_type], error_messages=required("event_type", f"one of {SUPPORTED}")
    )


class WebhookListParamsSerializer(ListParamsSerializer):
    limit = limit_field(default=20, maximum=100)
    order = ChoiceField(["asc", "desc"], required=False, default="desc")


# ------------------------------------------------------------------------------------------------ objects
class WebhookEndpointSerializer(ObjectSerializer):
    id = serializers.CharField()
    object = ConstantField("webhook_endpoint")
    created_at = UnixTimeField()
    event_types = serializers.ListField(child=serializers.CharField())
    name = serializers.CharField()
    signing_secret_hint = serializers.CharField(allow_null=True)
    url = serializers.CharField()
    updated_at = UnixTimeField(allow_null=True)


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    """The only shape with the whole signing secret: the answer to create and rotate_secret."""

    signing_secret = serializers.SerializerMethodField()

    def get_signing_secret(self, endpoint) -> str:
        return self.context["signing_secret"]


WebhookEndpointListSerializer = page_serializer("WebhookEndpointList", WebhookEndpointSerializer)


class DeletedWebhookEndpointSerializer(ObjectSerializer):
    id = serializers.CharField()
    object = ConstantField("webhook_endpoint.deleted")
    deleted = ConstantField(True)


class WebhookEndpointTestResultSerializer(ObjectSerializer):
    object = ConstantField("webhook_endpoint.test")
    webhook_endpoint_id = serializers.CharField()
    event_type = serializers.CharField()
    status_code = serializers.IntegerField()
    success = ConstantField(True)  # the request completed; status_code says how the receiver took it


class WebhookEventTypeListSerializer(ObjectSerializer):
    object = ConstantField("list")
    # (DRF's metaclass takes declared fields off the class: Serializer.data stays what the stubs say)
    data = serializers.ListField(child=serializers.CharField())  # type: ignore[assignment]
