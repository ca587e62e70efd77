"""The wire format of batches and models: what POST /v1/batches takes, and OpenAI's Batch (with its errors,
request_counts and usage) and Model. Names follow the official SDK (openai.types)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from batches_api.models import Batch
from batches_api.services import COMPLETION_WINDOWS, served_endpoints
from batchserver.serializers import (
    ChoiceField,
    ConstantField,
    IntegerField,
    ListParamsSerializer,
    ObjectSerializer,
    RequestSerializer,
    StringField,
    UnixTimeField,
    limit_field,
    page_serializer,
)
from files_api.serializers import ExpiresAfterSerializer

METADATA_MAX_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 16, 64, 512


# ------------------------------------------------------------------------------------------------ requests
class EndpointField(ChoiceField):
    """A batch endpoint this deployment serves: those of its models, read when a request comes."""

    def __init__(self, **kwargs) -> None:
        endpoints = served_endpoints()
        super().__init__(
            endpoints,
            error_messages={"invalid_choice": "'{input}'. This server runs batches for: " + ", ".join(endpoints) + "."},
            **kwargs,
        )


def check_metadata(metadata: dict) -> None:
    if len(metadata) > METADATA_MAX_PAIRS:
        raise serializers.ValidationError(f"at most {METADATA_MAX_PAIRS} key-value pairs, got {len(metadata)}.")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_MAX:
            raise serializers.ValidationError(f"key '{key[:80]}…' is longer than {METADATA_KEY_MAX} characters.")
        if not isinstance(value, str):
            raise serializers.ValidationError(f"the value of '{key}' must be a string.")
        if len(value) > METADATA_VALUE_MAX:
            raise serializers.ValidationError(f"the value of '{key}' is longer than {METADATA_VALUE_MAX} characters.")


class MetadataField(serializers.DictField):
    """OpenAI's metadata: at most 16 pairs, keys of at most 64 characters, string values of at most 512. Checked as
    a whole (check_metadata), so that every refusal names `metadata`."""

    def __init__(self, **kwargs) -> None:
        super().__init__(
            child=StringField(allow_blank=True, max_length=METADATA_VALUE_MAX),
            validators=[check_metadata],
            error_messages={"not_a_dict": "expected an object of string keys and values."},
            **kwargs,
        )

    def run_child_validation(self, data: dict) -> dict:
        return data  # the values are checked with the rest in check_metadata


class CreateBatchSerializer(RequestSerializer):
    input_file_id = StringField()
    endpoint = EndpointField()
    completion_window = ChoiceField(list(COMPLETION_WINDOWS))
    metadata = MetadataField(required=False, allow_null=True)
    output_expires_after = ExpiresAfterSerializer(required=False, allow_null=True)


class ListBatchesParamsSerializer(ListParamsSerializer):
    limit = limit_field(default=20, maximum=100)


RESULTS_LIMIT_DEFAULT, RESULTS_LIMIT_MAX = 1_000, 10_000


class BatchResultsParamsSerializer(RequestSerializer):
    """The query of GET /v1/batches/{id}/results."""

    after = IntegerField(
        text=True,
        required=False,
        default=0,
        min_value=0,
        help_text="The cursor of the page before (its x-next-cursor header); 0, or left out, starts at the first line.",
        error_messages={
            "invalid": "expected the x-next-cursor header of the previous page (an integer), got '{input}'.",
            "min_value": "%(value)s. A cursor is never negative: pass the x-next-cursor header of the previous page.",
        },
    )
    limit = limit_field(default=RESULTS_LIMIT_DEFAULT, maximum=RESULTS_LIMIT_MAX)


# ------------------------------------------------------------------------------------------------ objects
class BatchErrorSerializer(ObjectSerializer):
    code = serializers.CharField()
    message = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    line = serializers.IntegerField(allow_null=True)


class BatchErrorsSerializer(ObjectSerializer):
    object = ConstantField("list")
    # (DRF's metaclass takes declared fields off the class: Serializer.data stays what the stubs say)
    data = BatchErrorSerializer(many=True, source="*")  # type: ignore[assignment]

    def get_attribute(self, batch: Batch) -> list[dict] | None:
        return super().get_attribute(batch) or None  # a batch without errors has null, not an empty list


class BatchRequestCountsSerializer(ObjectSerializer):
    total = serializers.IntegerField(source="total_requests")
    completed = serializers.IntegerField(source="completed_requests")
    failed = serializers.IntegerField(source="failed_requests")


class InputTokensDetailsSerializer(ObjectSerializer):
    cached_tokens = serializers.IntegerField()


class OutputTokensDetailsSerializer(ObjectSerializer):
    reasoning_tokens = serializers.IntegerField()


class BatchUsageSerializer(ObjectSerializer):
    input_tokens = serializers.IntegerField()
    input_tokens_details = InputTokensDetailsSerializer(source="*")
    output_tokens = serializers.IntegerField()
    output_tokens_details = OutputTokensDetailsSerializer(source="*")
    total_tokens = serializers.SerializerMethodField()

    def get_total_tokens(self, batch: Batch) -> int:
        return batch.input_tokens + batch.output_tokens


class BatchSerializer(ObjectSerializer):
    id = serializers.CharField()
    object = ConstantField("batch")
    endpoint = serializers.CharField()
    model = serializers.CharField(allow_null=True)
    # (DRF's metaclass takes declared fields off the class: Serializer.errors stays what the stubs say)
    errors = BatchErrorsSerializer(allow_null=True)  # type: ignore[assignment]
    input_file_id = serializers.CharField()
    completion_window = serializers.CharField()
    status = serializers.ChoiceField(Batch.Status.choices)
    output_file_id = serializers.CharField(allow_null=True)
    error_file_id = serializers.CharField(allow_null=True)
    created_at = UnixTimeField()
    in_progress_at = UnixTimeField(allow_null=True)
    expires_at = UnixTimeField()
    finalizing_at = UnixTimeField(allow_null=True)
    completed_at = UnixTimeField(allow_null=True)
    failed_at = UnixTimeField(allow_null=True)
    expired_at = UnixTimeField(allow_null=True)
    cancelling_at = UnixTimeField(allow_null=True)
    cancelled_at = UnixTimeField(allow_null=True)
    request_counts = BatchRequestCountsSerializer(source="*")
    usage = BatchUsageSerializer(source="*")
    metadata = serializers.DictField(child=serializers.CharField(), allow_null=True)


ListBatchesResponseSerializer = page_serializer("ListBatchesResponseSerializer", BatchSerializer)


def batch_json(batch: Batch) -> str:
    """The batch object as the JSON text GET /v1/batches/{id} answers, byte for byte."""
    return JSONRenderer().render(BatchSerializer(batch).data).decode()


@extend_schema_serializer(component_name="Model")
class ModelObjectSerializer(ObjectSerializer):
    """A model this server serves."""

    # Read from the model's settings (BATCHSERVER_MODELS), with its name as `id`.
    id = serializers.CharField()
    object = ConstantField("model")
    created = serializers.IntegerField()
    owned_by = serializers.CharField()


ListModelsResponseSerializer = page_serializer("ListModelsResponseSerializer", ModelObjectSerializer)
