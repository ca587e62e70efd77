"""Shared pieces of the /v1/ views."""

from __future__ import annotations

import logging

from django.conf import settings
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request

from batchserver.errors import InvalidRequest
from batchserver.parsers import json_loads

logger = logging.getLogger(__name__)


def caller_project(request: Request):
    return request.user.project


def json_object_body(request: Request) -> dict:
    """The JSON body, which must be an object (a list or a string is a 400, not a crash)."""
    data = request.data
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data


def form_or_json_object(data, name: str) -> dict | None:
    """A nested object sent as JSON or, in multipart forms, as name[key]=value fields (the SDK's encoding)."""
    value = data.get(name)
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        parsed = json_loads(value, what=f"'{name}'", param=name)
        if not isinstance(parsed, dict):
            raise InvalidRequest(f"Invalid '{name}': expected an object.", param=name)
        return parsed
    if value is not None:
        raise InvalidRequest(f"Invalid '{name}': expected an object.", param=name)
    prefix = f"{name}["
    nested = {key[len(prefix):-1]: data.get(key) for key in data.keys() if key.startswith(prefix) and key.endswith("]")}
    return nested or None




class JsonOnlyNegotiation(DefaultContentNegotiation):
    """Always JSON, whatever Accept says (the SDK asks for application/binary when it downloads content)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
