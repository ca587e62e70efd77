"""Shared pieces of the /v1/ views."""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request


def caller_project(request: Request):
    return request.user.project


class JsonOnlyNegotiation(DefaultContentNegotiation):
    """Always JSON, whatever Accept says (the SDK asks for application/binary when it downloads content)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
