"""The wire format of files and uploads: what POST /v1/files and /v1/uploads take, and OpenAI's FileObject,
FileDeleted, Upload and UploadPart. Names follow the official SDK (openai.types)."""

from __future__ import annotations

import re

from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.utils import html

from batchserver.parsers import json_loads
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
    out_of_range,
    page_serializer,
)
from files_api.models import File, Upload

MAX_FILENAME = 512  # File.filename and Upload.filename
MAX_MIME_TYPE = 255  # Upload.mime_type
# type/subtype with optional parameters (RFC 6838 names, RFC 9110 parameters), ASCII only.
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
_MIME_TYPE = re.compile(rf'{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"[^"\\\x00-\x1f\x7f]*"))*', re.ASCII)
EXPIRES_AFTER_MIN, EXPIRES_AFTER_MAX = 3600, 2_592_000


def check_filename(filename: str) -> None:
    """A name we can send back in a header and write to a log line as it is: printable, of bounded length.

    "Printable" is Python's str.isprintable(), the rule Django's multipart parser already applies to the names
    of uploaded files: no control characters (CR, LF, NUL…), no lone surrogates, no invisible separators.
    """
    if len(filename) > MAX_FILENAME:
        raise serializers.ValidationError(
            f"the file name is {len(filename)} characters long; the limit is {MAX_FILENAME}. Use a shorter name."
        )
    if not filename.isprintable():
        position, char = next((i, c) for i, c in enumerate(filename) if not c.isprintable())
        raise serializers.ValidationError(
            f"the file name holds U+{ord(char):04X} at position {position}, a control character, line break or "
            "other unprintable character. Rename the file without it."
        )


def check_mime_type(mime_type: str) -> None:
    if len(mime_type) > MAX_MIME_TYPE or not _MIME_TYPE.fullmatch(mime_type):
        raise serializers.ValidationError(
            f"{mime_type[:64]!r}. Send a MIME type of at most {MAX_MIME_TYPE} characters such as 'application/jsonl' "
            "or 'text/plain; charset=utf-8'."
        )


class FileField(serializers.FileField):
    """A file of a multipart form, empty or not. Anything else under its name (a text field, JSON) is no file."""

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_empty_file=True, **kwargs)

    def to_internal_value(self, data) -> UploadedFile:
        if not isinstance(data, UploadedFile):
            self.fail("required")
        return data


class ExpiresAfterSerializer(RequestSerializer):
    """When the file expires: `seconds` after `anchor`, its creation. In a multipart form: JSON text, or the fields
    expires_after[anchor] and expires_after[seconds] (as the official SDK sends it)."""

    default_error_messages = {"invalid": "expected an object."}

    anchor = ChoiceField(["created_at"])
    seconds = IntegerField(
        text=True,
        min_value=EXPIRES_AFTER_MIN,
        max_value=EXPIRES_AFTER_MAX,
        error_messages=out_of_range(
            f"It must be between {EXPIRES_AFTER_MIN} (1 hour) and {EXPIRES_AFTER_MAX} (30 days)."
        ),
    )

    def get_value(self, dictionary):
        if self.field_name in dictionary:
            return dictionary[self.field_name]
        prefix = f"{self.field_name}["
        fields = {
            key[len(prefix) : -1]: value
            for key, value in dictionary.items()
            if key.startswith(prefix) and key.endswith("]")
        }
        return fields or empty

    def to_internal_value(self, data) -> dict:
        if isinstance(data, str) and html.is_html_input(self.root.initial_data):
            # JSON text in a form field: read as safely as a JSON body, and refused in the same words.
            data = json_loads(data, what=f"'{self.field_name}'", param=self.field_name)
        return super().to_internal_value(data)

    def validate(self, attrs: dict) -> int:
        return attrs["seconds"]  # what the services take: the seconds after creation


# ------------------------------------------------------------------------------------------------ requests
class CreateFileSerializer(RequestSerializer):
    file = FileField(source="content", error_messages={"required": "Send it as multipart/form-data."})
    purpose = ChoiceField(File.UPLOAD_PURPOSES)
    expires_after = ExpiresAfterSerializer(required=False, allow_null=True)

    def validate_file(self, file: UploadedFile) -> UploadedFile:
        assert file.name is not None  # FileField refuses a file without a name before this
        check_filename(file.name)
        return file


class ListFilesParamsSerializer(ListParamsSerializer):
    limit = limit_field(default=10_000, maximum=10_000)
    order = ChoiceField(["asc", "desc"], required=False, default="desc")
    purpose = StringField(required=False)


class CreateUploadSerializer(RequestSerializer):
    bytes = IntegerField(source="size", min_value=0, error_messages={"min_value": "must be zero or more."})
    filename = StringField(max_length=MAX_FILENAME, validators=[check_filename])
    mime_type = StringField(max_length=MAX_MIME_TYPE, validators=[check_mime_type])
    purpose = ChoiceField(File.UPLOAD_PURPOSES)
    expires_after = ExpiresAfterSerializer(required=False, allow_null=True)


class AddUploadPartSerializer(RequestSerializer):
    # (DRF's metaclass takes declared fields off the class: Serializer.data stays what the stubs say)
    data = FileField(error_messages={"required": "Send the part as multipart/form-data."})  # type: ignore[assignment]


def check_listed_once(part_ids: list[str]) -> None:
    if len(set(part_ids)) != len(part_ids):
        raise serializers.ValidationError("a part is listed twice.")


class CompleteUploadSerializer(RequestSerializer):
    part_ids = serializers.ListField(
        child=StringField(),
        allow_empty=False,
        validators=[check_listed_once],
        error_messages={"not_a_list": "expected a list of part ids."},
    )
    md5 = StringField(required=False, allow_null=True)


# ------------------------------------------------------------------------------------------------ objects
@extend_schema_serializer(deprecate_fields=["status", "status_details"])
class FileObjectSerializer(ObjectSerializer):
    id = serializers.CharField()
    object = ConstantField("file")
    bytes = serializers.IntegerField()
    created_at = UnixTimeField()
    expires_at = UnixTimeField(allow_null=True)
    filename = serializers.CharField()
    purpose = serializers.ChoiceField(File.Purpose.choices)
    status = ConstantField("processed")  # deprecated by OpenAI; a stored file is always processed
    status_details = serializers.SerializerMethodField()

    def get_status_details(self, file: File) -> str | None:
        return None


ListFilesResponseSerializer = page_serializer("ListFilesResponseSerializer", FileObjectSerializer)


class FileDeletedSerializer(ObjectSerializer):
    id = serializers.CharField()
    object = ConstantField("file")
    deleted = ConstantField(True)


class UploadSerializer(ObjectSerializer):
    id = serializers.CharField()
    object = ConstantField("upload")
    bytes = serializers.IntegerField()
    created_at = UnixTimeField()
    expires_at = UnixTimeField()
    filename = serializers.CharField()
    purpose = serializers.ChoiceField(File.Purpose.choices)
    status = serializers.ChoiceField(Upload.Status.choices)
    file = FileObjectSerializer(allow_null=True)


class UploadPartSerializer(ObjectSerializer):
    id = serializers.CharField()
    object = ConstantField("upload.part")
    created_at = UnixTimeField()
    upload_id = serializers.CharField()
