"""Shared pieces of the /v1/ views."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request

from batchserver.errors import InvalidRequest
from batchserver.parsers import json_loads


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


def readyz(request):
    """Readiness: the database and the file storage answer, and every served model has a live worker."""
    from django.core.files.storage import default_storage

    from inference.models import Worker

    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        return JsonResponse({"status": "error", "checks": {"database": str(exc)}}, status=503)
    try:
        default_storage.exists("readyz-probe")
        checks["storage"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["storage"] = f"error: {exc}"
    served = Worker.objects.alive().served_models()
    for model in settings.BATCHSERVER_MODELS:
        checks[f"model:{model}"] = "ok" if model in served else "no live worker serves it"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def healthz(request):
    """Liveness: the process answers and the database is reachable."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any database failure means not healthy
        return JsonResponse({"status": "error", "database": str(exc)}, status=503)
    return JsonResponse({"status": "ok", "database": "ok", "models": list(settings.BATCHSERVER_MODELS)})


class JsonOnlyNegotiation(DefaultContentNegotiation):
    """Always JSON, whatever Accept says (the SDK asks for application/binary when it downloads content)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
