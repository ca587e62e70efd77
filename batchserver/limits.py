"""The limits of a project and of an API key: its own value when it has one, else the server's default (an
environment variable); None is no limit. And the lock that makes "check a project's limit, then act" one step for
every process of every machine.

- Enqueued tokens, per project and model (ProjectModelLimit, BATCHSERVER_ENQUEUED_TOKENS_LIMIT): checked by
  batches_api when a batch leaves `validating`.
- Batches in flight, per project (Project.max_batches_in_flight, BATCHSERVER_MAX_BATCHES_IN_FLIGHT): checked by
  batches_api on POST /v1/batches.
- Stored bytes, per project (Project.max_stored_bytes, BATCHSERVER_MAX_STORED_BYTES): checked by files_api on uploads.
- Requests per minute, per API key (ApiKey.rate_limit_rpm, BATCHSERVER_RATE_LIMIT_RPM): batchserver.ratelimit.
"""

from __future__ import annotations

from django.conf import settings

from batchserver.models import ApiKey, Project, ProjectModelLimit


def lock_project(project_id: int) -> Project:
    """Inside a transaction: the project's row, locked until the transaction ends, so that two processes that check
    one of its limits and then act on it take turns. FOR NO KEY UPDATE: rows that only point to the project (a new
    file, a new batch) are not held up by it. (On SQLite every write transaction takes the database's one lock.)"""
    return Project.objects.select_for_update(no_key=True).get(pk=project_id)


def enqueued_tokens_limit(project_id: int, model: str) -> int | None:
    own = ProjectModelLimit.objects.filter(project_id=project_id, model=model).values_list("enqueued_tokens", flat=True)
    for limit in own:
        return limit
    return settings.BATCHSERVER_ENQUEUED_TOKENS_LIMIT


def batches_in_flight_limit(project: Project) -> int | None:
    if project.max_batches_in_flight is not None:
        return project.max_batches_in_flight
    return settings.BATCHSERVER_MAX_BATCHES_IN_FLIGHT


def stored_bytes_limit(project: Project) -> int | None:
    if project.max_stored_bytes is not None:
        return project.max_stored_bytes
    return settings.BATCHSERVER_MAX_STORED_BYTES


def requests_per_minute(api_key: ApiKey) -> int | None:
    if api_key.rate_limit_rpm is not None:
        return api_key.rate_limit_rpm
    return settings.BATCHSERVER_RATE_LIMIT_RPM


def human_bytes(size: int) -> str:
    """1536 -> '1.5 KB', in powers of 1024 as `ls -h` shows them (and with the exact count for small sizes)."""
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{size:,} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
