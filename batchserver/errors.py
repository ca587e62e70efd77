"""One error envelope for the whole API: OpenAI's {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework import fields as drf_fields
from rest_framework.response import Response
from rest_framework.settings import api_settings

from batchserver.serializers import ErrorResponseSerializer

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A client error, with OpenAI's status code and body fields. Raised by services, turned into a response
    by `openai_exception_handler`."""

    status_code = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = {}  # sent with the answer (e.g. retry-after)
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    def body(self) -> dict:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


class InvalidRequest(ApiError):
    status_code = 400


class NotFound(ApiError):
    status_code = 404

    @classmethod
    def object(cls, kind: str, object_id: str, param: str | None = None) -> NotFound:
        return cls(f"No such {kind}: '{object_id}'", param=param)


class Conflict(ApiError):
    """A request that the object's current state forbids (OpenAI answers these with a 409 or 400)."""

    status_code = 409


class TooLarge(ApiError):
    status_code = 413


class TooManyRequests(ApiError):
    """A limit that time lifts: OpenAI answers these with a 429, whose `type` names what is limited."""

    status_code = 429
    code = "rate_limit_exceeded"


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    return ErrorResponseSerializer({"error": {"message": message, "type": type, "param": param, "code": code}}).data


NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY). Create one with `python manage.py apikey create`."
)


def openai_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's exception handler: every client error in OpenAI's envelope; unexpected errors stay 500s."""
    if isinstance(exc, ApiError):
        return Response(exc.body(), status=exc.status_code, headers=exc.headers)
    if isinstance(exc, OperationalError | InterfaceError):  # the database is down or restarting
        logger.warning("database unavailable: %s", exc)
        return Response(
            error_body(
                "The server is temporarily unavailable: its database did not answer. Retry in a few seconds.",
                type="server_error",
            ),
            status=503,
            headers={"Retry-After": "2"},
        )
    if isinstance(exc, drf.NotAuthenticated):
        return Response(error_body(NO_KEY_MESSAGE), status=401, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, drf.AuthenticationFailed):
        return Response(
            error_body(str(exc.detail), code="invalid_api_key"), status=401, headers={"WWW-Authenticate": "Bearer"}
        )
    if isinstance(exc, Http404 | drf.NotFound):
        return Response(error_body("Not found."), status=404)
    if isinstance(exc, drf.MethodNotAllowed):
        request = context.get("request")
        message = f"Invalid method for URL ({request.method} {request.path})" if request else str(exc.detail)
        return Response(error_body(message), status=405)
    if isinstance(exc, drf.UnsupportedMediaType):
        return Response(
            error_body(f"{exc.detail} Send JSON (application/json), or multipart/form-data for file uploads."),
            status=415,
        )
    if isinstance(exc, drf.ParseError):
        return Response(error_body(f"We could not parse the body of your request: {exc.detail}"), status=400)
    if isinstance(exc, drf.ValidationError):
        param, message = _first_validation_error(exc.detail)
        return Response(error_body(message, param=param), status=400)
    if isinstance(exc, RequestDataTooBig):  # form fields (not files) past DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            error_body(
                "The form fields of the request are too large. Send files as file fields "
                "and keep the other fields short."
            ),
            status=413,
        )
    if isinstance(exc, SuspiciousOperation):  # e.g. too many form fields or files: Django's text names the limit
        return Response(error_body(f"{exc} Send a smaller request."), status=400)
    if isinstance(exc, drf.Throttled):
        return Response(error_body(str(exc.detail), type="rate_limit_error", code="rate_limit_exceeded"), status=429)
    if isinstance(exc, drf.APIException):
        return Response(error_body(str(exc.detail)), status=exc.status_code)
    return None  # unexpected: DRF re-raises, Django logs it and answers 500 (handler500 below)


# Codes of a value not sent, or sent empty: OpenAI's "Missing required parameter". DRF's own words for them are
# dropped; a field's own message for them is a hint that follows ("Send it as multipart/form-data.").
MISSING = ("required", "null", "blank", "empty")
DRF_MISSING = (
    drf_fields.Field.default_error_messages["required"],
    drf_fields.Field.default_error_messages["null"],
    drf_fields.CharField.default_error_messages["blank"],
    drf_fields.ListField.default_error_messages["empty"],
)


def _first_validation_error(detail, param: str | None = None) -> tuple[str | None, str]:
    """The first error of a serializer's (possibly nested) errors, in OpenAI's words, and the name of its
    parameter: `expires_after.seconds` in an object, `part_ids[0]` in a list."""
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        if isinstance(key, int):
            param = f"{param}[{key}]"
        elif key != api_settings.NON_FIELD_ERRORS_KEY:
            param = f"{param}.{key}" if param else key
        return _first_validation_error(value, param)
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0], param)
    message, code = str(detail), getattr(detail, "code", None)
    if param is None:
        return None, message
    if code in MISSING:
        hint = "" if message in map(str, DRF_MISSING) else f" {message}"  # DRF's words are lazy translations
        return param, f"Missing required parameter: '{param}'.{hint}"
    if code == "invalid_choice":
        return param, f"Invalid value for '{param}': {message}"
    return param, f"Invalid '{param}': {message}"


def _is_api(request) -> bool:
    return request.path.startswith("/v1/")


def handler404(request, exception=None):
    if _is_api(request):
        return JsonResponse(error_body(f"Invalid URL ({request.method} {request.path})"), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler400(request, exception=None):
    """Requests refused before a view runs (BadRequest, SuspiciousOperation): their text is about the request."""
    if _is_api(request):
        message = str(exception or "") or "The request is malformed. Check its URL, headers and body."
        return JsonResponse(error_body(message), status=400)
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def handler500(request):
    if _is_api(request):
        return JsonResponse(
            error_body(
                "The server had an error while processing your request. Retry it; if the error "
                "persists, the server's log has the details.",
                type="server_error",
            ),
            status=500,
        )
    from django.views.defaults import server_error

    return server_error(request)
