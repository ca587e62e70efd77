"""/healthz and /readyz. Part of the project's wiring (with settings, urls, the admin site and the metrics):
readiness reads the workers, which belong to batches_api."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.http import HttpRequest, JsonResponse

from batches_api.models import Worker

logger = logging.getLogger(__name__)

DATABASE_DOWN = "error: the database does not answer (the server's log has the details)"


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        # The exception's text can name the database host and user: it goes to the log, not the probe.
        logger.exception("the database does not answer")
        return False
    return True


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and the file storage answer, and every served model has a live worker that is
    ready (has loaded the models it preloads)."""
    checks: dict[str, str] = {}
    if not _database_answers():
        return JsonResponse({"status": "error", "checks": {"database": DATABASE_DOWN}}, status=503)
    checks["database"] = "ok"
    try:
        default_storage.exists("readyz-probe")
        checks["storage"] = "ok"
    except Exception:
        # The exception's text can name the bucket, the host or a path: it goes to the log, not the probe.
        logger.exception("readyz: the file storage does not answer")
        checks["storage"] = "error: the file storage does not answer (the server's log has the details)"
    served = Worker.objects.alive().served_models()
    ready = Worker.objects.alive().filter(ready_at__isnull=False).served_models()
    for model in settings.BATCHSERVER_MODELS:
        checks[f"model:{model}"] = (
            "ok" if model in ready else "a worker is loading it" if model in served else "no live worker serves it"
        )
    all_ok = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if all_ok else "unavailable", "checks": checks}, status=200 if all_ok else 503)


def healthz(request):
    """Liveness: the process answers and the database is reachable."""
    if not _database_answers():
        return JsonResponse({"status": "error", "database": DATABASE_DOWN}, status=503)
    return JsonResponse({"status": "ok", "database": "ok", "models": list(settings.BATCHSERVER_MODELS)})
