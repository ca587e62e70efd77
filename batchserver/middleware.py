"""One log line and one metric per HTTP request, with a request id returned as x-request-id (as OpenAI's)."""

from __future__ import annotations

import logging
import re
import time

from django.core.exceptions import BadRequest

from batchserver.ids import new_id
from batchserver.metrics import record_http

logger = logging.getLogger("batchserver.requests")
_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def route_label(route: str) -> str:
    """'v1/files/(?P<pk>[^/]+)/content$' -> '/v1/files/{id}/content': few values, easy to read."""
    return "/" + _GROUP.sub("{id}", route).strip("^$")


class RequestLogMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = new_id("req_", 16)
        request.request_id = request_id
        started = time.monotonic()
        response = self.get_response(request)
        response["x-request-id"] = request_id
        match = getattr(request, "resolver_match", None)
        endpoint = route_label(match.route) if match else "unmatched"
        record_http(request.method, endpoint, response.status_code)
        user = getattr(request, "user", None)
        project = getattr(getattr(user, "project", None), "name", None)
        logger.info(
            "%s %s %s %.0fms",
            request.method,
            request.path,
            response.status_code,
            (time.monotonic() - started) * 1000,
            extra={
                "request_id": request_id,
                "status": response.status_code,
                "method": request.method,
                "path": request.path,
                "endpoint": endpoint,
                "project": project,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return response


class RateLimitHeadersMiddleware:
    """OpenAI's x-ratelimit-*-requests headers on every /v1/ answer to a key with a request rate limit (the 429
    included), from what batchserver.ratelimit.ApiKeyRateThrottle left on the request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        state = getattr(request, "rate_limit", None)
        if state is not None:
            for name, value in state.headers().items():
                response[name] = value
        return response


class RejectNulInUrlMiddleware:
    """A NUL character (%00) in the path or the query string is a 400 for every view at once.

    PostgreSQL cannot hold U+0000 in text, so a NUL in an id or a filter would otherwise fail the lookup it
    reaches with a 500. No URL of this server needs one.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()
        ):
            raise BadRequest(
                "The URL holds a NUL character (%00), which no id or parameter may contain. "
                "Remove it from the path and the query string."
            )
        return self.get_response(request)
