"""What every serializer of the API is made of: strict input fields, OpenAI's wire types, the cursor page and the
error envelope.

Input serializers (`RequestSerializer`) validate a body or a query; their errors become OpenAI's error bodies in
batchserver.errors, which words them from each error's code ("required", "invalid_choice", …) and the field's
message. Output serializers (`ObjectSerializer`) are one OpenAI object each, with every key the object has; the
schema (/v1/openapi.json) describes them as closed objects (batchserver.openapi).
"""

from __future__ import annotations

from collections.abc import Mapping

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from batchserver.ids import unix


# ------------------------------------------------------------------------------------------------ input
# A request body or query. An empty string is a parameter not sent (`?limit=`, a blank form field). (Comments, not
# docstrings, on these base classes: the schema shows a serializer's docstring as its description.)
class RequestSerializer(serializers.Serializer):
    default_error_messages = {"invalid": "The request body must be a JSON object."}

    def validate_empty_values(self, data):
        if data is None and self.parent is None:  # a JSON body of `null` is not an object either
            return False, data
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            data = {key: value for key, value in data.items() if value != ""}
        return super().to_internal_value(data)


def validated(serializer: type[RequestSerializer], data) -> dict:
    """The validated data of a body or a query; invalid input raises the ValidationError that
    batchserver.errors answers."""
    request = serializer(data=data)
    request.is_valid(raise_exception=True)
    return request.validated_data


class StringField(serializers.CharField):
    """A string as it was sent: not a number turned into one (DRF's CharField takes 5 for "5"), not trimmed."""

    default_error_messages = {"invalid": "expected a string."}

    def __init__(self, **kwargs) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class IntegerField(serializers.IntegerField):
    """An integer: a JSON integer, never a boolean or a number with a fraction. With `text`, its decimal text too
    (query parameters and form fields are text)."""

    default_error_messages = {"invalid": "expected an integer."}

    def __init__(self, *, text: bool = False, **kwargs) -> None:
        self.text = text
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        if self.text and isinstance(data, str):
            try:
                return int(data)
            except ValueError:
                pass
        self.fail("invalid", input=data)


def out_of_range(rule: str) -> dict[str, str]:
    """Error messages of a bounded IntegerField that quote the value sent: "<value>. <rule>"."""
    return {"min_value": f"%(value)s. {rule}", "max_value": f"%(value)s. {rule}"}


class ChoiceField(serializers.ChoiceField):
    """One of a fixed list of strings, and the list named when another string comes."""

    default_error_messages = {
        "invalid": "expected a string.",
        "invalid_choice": "'{input}'. Supported values are: {supported}.",
    }

    def to_internal_value(self, data) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return self.choice_strings_to_values[data]
        except KeyError:
            self.fail("invalid_choice", input=data, supported=", ".join(f"'{choice}'" for choice in self.choices))


def limit_field(*, default: int, maximum: int) -> IntegerField:
    """The `limit` of a list: how many objects a page holds."""
    return IntegerField(
        text=True,
        required=False,
        default=default,
        min_value=1,
        max_value=maximum,
        error_messages={
            "invalid": "expected an integer, got '{input}'.",
            **out_of_range(f"It must be between 1 and {maximum}."),
        },
    )


# The query of a cursor list; each list adds its `limit` (limit_field) and its filters.
class ListParamsSerializer(RequestSerializer):
    after = StringField(required=False)


# ------------------------------------------------------------------------------------------------ output
# An object the API sends: every key it has is declared on its serializer, and no other is sent.
class ObjectSerializer(serializers.Serializer):
    pass


@extend_schema_field(OpenApiTypes.INT)
class UnixTimeField(serializers.Field):
    """A timestamp as OpenAI sends it: Unix seconds."""

    def __init__(self, **kwargs) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value) -> int | None:
        return unix(value)


class ConstantField(serializers.Field):
    """A key whose value never changes, such as OpenAI's `object`: the schema names that one value."""

    def __init__(self, value: str | bool, **kwargs) -> None:
        self.value = value
        super().__init__(read_only=True, source="*", **kwargs)
        # On the instance, in __init__: DRF copies a field by calling __init__ again, and the copy keeps it.
        # (drf-spectacular types the decorator for classes and functions; an instance takes it the same way)
        extend_schema_field({"type": "boolean" if isinstance(value, bool) else "string", "enum": [value]})(self)  # type: ignore[type-var]

    def to_representation(self, _) -> str | bool:
        return self.value


@extend_schema_serializer(many=False)  # one page, even as the answer of a `list` action
class PageSerializer(ObjectSerializer):
    """A list of objects, a page at a time: `first_id` and `last_id` are the ids of the first and last object of
    `data`; when `has_more`, the next page starts after `last_id`."""

    # Made by `page_serializer`; serializes {"data": objects, "has_more": bool}.
    def to_representation(self, page: Mapping) -> dict:
        body = super().to_representation(page)  # first_id and last_id are null here: they name the objects sent
        if body["data"]:
            body["first_id"], body["last_id"] = body["data"][0]["id"], body["data"][-1]["id"]
        return body


def page_serializer(name: str, item: type[ObjectSerializer]) -> type[PageSerializer]:
    """The serializer of a list page of `item` objects, named `name` (the schema names its component after it)."""
    return type(
        name,
        (PageSerializer,),
        {
            "object": ConstantField("list"),
            "data": item(many=True),
            "first_id": serializers.CharField(allow_null=True),
            "last_id": serializers.CharField(allow_null=True),
            "has_more": serializers.BooleanField(),
        },
    )


class ErrorSerializer(ObjectSerializer):
    """What was wrong: `param` names the parameter at fault (or is null), `code` is a code for programs (or null)."""

    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField(allow_null=True)


class ErrorResponseSerializer(ObjectSerializer):
    """The body of every error."""

    error = ErrorSerializer()
