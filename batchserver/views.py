"""Shared pieces of the /v1/ views."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request

if TYPE_CHECKING:
    from batchserver.auth import Caller
    from batchserver.models import Project


def caller_project(request: Request) -> Project:
    # The stubs know Django's users only; on /v1/ ApiKeyAuthentication sets request.user to a Caller.
    return cast("Caller", request.user).project


class JsonOnlyNegotiation(DefaultContentNegotiation):
    """Always JSON, whatever Accept says (the SDK asks for application/binary when it downloads content)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
