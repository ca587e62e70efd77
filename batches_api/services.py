"""Writes for batches: create, cancel, validate the input, finalize the results."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from batchserver.db import bulk_update_rows
from batchserver.errors import Conflict, InvalidRequest, NotFound
from batchserver.ids import new_id
from batchserver.models import Project
from batches_api.models import Batch, BatchRequest
from batches_api.validation import InputValidator, iter_lines
from files_api.models import File
from files_api.services import check_expires_after, file_create_from_local, file_get, file_open

logger = logging.getLogger(__name__)

COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
METADATA_MAX_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 16, 64, 512
INSERT_CHUNK = 1000


def log_transition(batch_id: str, status: str, detail: str = "") -> None:
    """One log line per batch transition, with the batch id as a field for JSON logs."""
    logger.info("batch %s %s%s", batch_id, status, f" ({detail})" if detail else "",
                extra={"batch_id": batch_id, "status": str(status)})


def served_endpoints() -> list[str]:
    """Endpoints a batch may target: those some served model handles, in a stable order."""
    seen: dict[str, None] = {}
    for spec in settings.BATCHSERVER_MODELS.values():
        for endpoint in spec["endpoints"]:
            seen.setdefault(endpoint, None)
    return list(seen)


def enqueue(func: str, *args) -> None:
    """Queue a short job for the task cluster once the current transaction commits."""
    from django_q.tasks import async_task

    transaction.on_commit(lambda: async_task(func, *args, cluster=settings.TASKS_CLUSTER,
                                             task_name=f"{func.rsplit('.', 1)[-1]} {' '.join(map(str, args))}"))


def check_metadata(metadata) -> dict | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidRequest("Invalid 'metadata': expected an object of string keys and values.", param="metadata")
    if len(metadata) > METADATA_MAX_PAIRS:
        raise InvalidRequest(f"Invalid 'metadata': at most {METADATA_MAX_PAIRS} key-value pairs, got "
                             f"{len(metadata)}.", param="metadata")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_MAX:
            raise InvalidRequest(f"Invalid 'metadata': key '{key[:80]}…' is longer than {METADATA_KEY_MAX} "
                                 "characters.", param="metadata")
        if not isinstance(value, str):
            raise InvalidRequest(f"Invalid 'metadata': the value of '{key}' must be a string.", param="metadata")
        if len(value) > METADATA_VALUE_MAX:
            raise InvalidRequest(f"Invalid 'metadata': the value of '{key}' is longer than {METADATA_VALUE_MAX} "
                                 "characters.", param="metadata")
    return metadata


# ------------------------------------------------------------------------------------------------ create
def batch_create(*, project: Project, input_file_id, endpoint, completion_window, metadata=None,
                 output_expires_after=None) -> Batch:
    for name, value in (("input_file_id", input_file_id), ("endpoint", endpoint),
                        ("completion_window", completion_window)):
        if value in (None, ""):
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        if not isinstance(value, str):
            raise InvalidRequest(f"Invalid '{name}': expected a string.", param=name)
    endpoints = served_endpoints()
    if endpoint not in endpoints:
        raise InvalidRequest(
            f"Invalid value for 'endpoint': '{endpoint}'. This server runs batches for: "
            + ", ".join(endpoints) + ".", param="endpoint")
    if completion_window not in COMPLETION_WINDOWS:
        raise InvalidRequest(f"Invalid value for 'completion_window': '{completion_window}'. Supported values "
                             "are: '24h'.", param="completion_window")
    metadata = check_metadata(metadata)
    expires_after = None
    if output_expires_after is not None:
        if not isinstance(output_expires_after, dict):
            raise InvalidRequest("Invalid 'output_expires_after': expected an object.", param="output_expires_after")
        expires_after = check_expires_after(output_expires_after.get("anchor"), output_expires_after.get("seconds"),
                                            param="output_expires_after")
    file = file_get(project=project, file_id=input_file_id, param="input_file_id")
    if file.purpose != File.Purpose.BATCH:
        raise InvalidRequest(f"File '{file.id}' has purpose '{file.purpose}'; a batch input must be uploaded "
                             "with purpose 'batch'.", param="input_file_id")
    now = timezone.now()
    with transaction.atomic():
        batch = Batch.objects.create(
            project=project, endpoint=endpoint, completion_window=completion_window, input_file=file,
            metadata=metadata, output_expires_after=expires_after, created_at=now,
            expires_at=now + COMPLETION_WINDOWS[completion_window],
        )
        enqueue("batches_api.tasks.validate_batch", batch.id)
    return batch


def batch_get(*, project: Project, batch_id: str) -> Batch:
    batch = Batch.objects.filter(project=project, pk=batch_id).first()
    if batch is None:
        raise NotFound.object("batch", batch_id)
    return batch


# ------------------------------------------------------------------------------------------------ cancel
def batch_cancel(*, batch: Batch) -> Batch:
    """Validating: cancelled at once. In progress: cancelling, finished by the worker (or the task cluster when
    no worker holds its requests) with partial results."""
    now = timezone.now()
    S = Batch.Status
    with transaction.atomic():
        if Batch.objects.filter(pk=batch.pk, status=S.VALIDATING).update(
            status=S.CANCELLED, cancelling_at=now, cancelled_at=now
        ):
            log_transition(batch.id, Batch.Status.CANCELLED, "while validating")
        elif Batch.objects.filter(pk=batch.pk, status=S.IN_PROGRESS).update(status=S.CANCELLING, cancelling_at=now):
            log_transition(batch.id, Batch.Status.CANCELLING)
            enqueue("batches_api.tasks.finalize_batch", batch.id)
        else:
            batch.refresh_from_db()
            if batch.status != S.CANCELLING:
                raise Conflict(f"Cannot cancel a batch with status '{batch.status}'.")
    batch.refresh_from_db()
    return batch


# ------------------------------------------------------------------------------------------------ validate
def batch_validate(*, batch_id: str) -> Batch | None:
    """Stream the input once; record one BatchRequest per line, or fail the batch with errors (code, line)."""
    batch = Batch.objects.filter(pk=batch_id).select_related("input_file").first()
    if batch is None or batch.status != Batch.Status.VALIDATING:
        return batch  # cancelled meanwhile, or a second delivery of the task
    Batch.objects.filter(pk=batch.pk).update(validation_attempts=batch.validation_attempts + 1)
    BatchRequest.objects.filter(batch=batch).delete()  # a previous attempt that died half-way
    validator = InputValidator(endpoint=batch.endpoint, models=settings.BATCHSERVER_MODELS,
                               max_requests=settings.BATCHSERVER_MAX_BATCH_REQUESTS)
    try:
        file = File.objects.get(pk=batch.input_file_id)
    except File.DoesNotExist:
        return _fail(batch, [{"code": "invalid_request", "message": f"The input file '{batch.input_file_id}' "
                              "was deleted before the batch started.", "param": "input_file_id", "line": None}])
    pending: list[BatchRequest] = []
    with file_open(file) as fh:
        for number, offset, raw in iter_lines(fh):
            parsed = validator.check(number, offset, raw)
            if parsed is None or validator.result.error_count:
                pending.clear()  # the batch will fail: stop writing rows, keep reading to report every error
                continue
            pending.append(BatchRequest(batch=batch, line=parsed.line, custom_id=parsed.custom_id,
                                        offset=parsed.offset, length=parsed.length))
            if len(pending) >= INSERT_CHUNK:
                BatchRequest.objects.bulk_create(pending)
                pending.clear()
    result = validator.finish()
    if result.error_count:
        BatchRequest.objects.filter(batch=batch).delete()
        return _fail(batch, result.errors)
    BatchRequest.objects.bulk_create(pending)
    now = timezone.now()
    with transaction.atomic():
        updated = Batch.objects.filter(pk=batch.pk, status=Batch.Status.VALIDATING).update(
            status=Batch.Status.IN_PROGRESS, in_progress_at=now, model=result.model, total_requests=result.total)
    if updated:
        log_transition(batch.id, Batch.Status.IN_PROGRESS, f"{result.total} requests for {result.model}")
    else:  # cancelled while we read the file
        BatchRequest.objects.filter(batch=batch).delete()
    batch.refresh_from_db()
    return batch


def _fail(batch: Batch, errors: list[dict]) -> Batch:
    Batch.objects.filter(pk=batch.pk, status=Batch.Status.VALIDATING).update(
        status=Batch.Status.FAILED, failed_at=timezone.now(), errors=errors)
    log_transition(batch.id, Batch.Status.FAILED, errors[0]["code"] if errors else "")
    batch.refresh_from_db()
    return batch


# ------------------------------------------------------------------------------------------------ results
def output_line(*, custom_id: str, status_code: int, body: dict) -> str:
    """A line of the output file, in OpenAI's format."""
    return json.dumps({
        "id": new_id("batch_req_", 16),
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": new_id("req_", 16), "body": body},
        "error": None,
    }, ensure_ascii=False, separators=(",", ":"))


def error_line(*, custom_id: str, code: str, message: str) -> str:
    """A line of the error file: a request that never produced a response."""
    return json.dumps({
        "id": new_id("batch_req_", 16),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }, ensure_ascii=False, separators=(",", ":"))


NOT_RUN = {
    Batch.Status.CANCELLING: ("batch_cancelled", "This request was not run: the batch was cancelled."),
    Batch.Status.IN_PROGRESS: ("batch_expired",
                               "This request could not be executed before the completion window expired."),
}


def batch_finalize(*, batch_id: str) -> Batch | None:
    """Finish a batch whose requests are all done, or which was cancelled or expired and that no live worker
    still runs requests of: write the output and error files and set the final status. Safe to call any
    time, any number of times, from anywhere."""
    from inference.models import stale_before

    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None or batch.status not in (Batch.Status.IN_PROGRESS, Batch.Status.CANCELLING,
                                             Batch.Status.FINALIZING):
        return batch
    now = timezone.now()
    requests = BatchRequest.objects.filter(batch=batch)
    live = Q(status=BatchRequest.Status.RUNNING, worker__stopped_at__isnull=True,
             worker__last_heartbeat_at__gte=stale_before())
    unfinished = requests.filter(status__in=[BatchRequest.Status.PENDING, BatchRequest.Status.RUNNING]).exists()
    stopping = batch.status == Batch.Status.CANCELLING or (
        batch.status == Batch.Status.IN_PROGRESS and batch.expires_at <= now and unfinished)
    if batch.status != Batch.Status.FINALIZING:
        if requests.filter(live).exists():
            return batch  # a worker still runs some; it calls us again when they end
        if unfinished and not stopping:
            return batch
    if stopping:
        code, message = NOT_RUN[batch.status]
        _mark_not_run(batch, code, message)
        final = Batch.Status.CANCELLED if batch.status == Batch.Status.CANCELLING else Batch.Status.EXPIRED
    else:
        if batch.status == Batch.Status.IN_PROGRESS:
            if not Batch.objects.filter(pk=batch.pk, status=Batch.Status.IN_PROGRESS).update(
                    status=Batch.Status.FINALIZING, finalizing_at=now):
                return Batch.objects.get(pk=batch.pk)
            batch.status = Batch.Status.FINALIZING
        final = Batch.Status.COMPLETED
    output = _write_results(batch, BatchRequest.Status.COMPLETED, "output")
    errors = _write_results(batch, BatchRequest.Status.ERRORED, "error")
    totals = requests.aggregate(
        input_tokens=Sum("input_tokens"), cached_tokens=Sum("cached_tokens"), output_tokens=Sum("output_tokens"),
        reasoning_tokens=Sum("reasoning_tokens"))
    succeeded = requests.filter(status=BatchRequest.Status.COMPLETED, status_code__lt=400).count()
    total = requests.count()
    stamp = {Batch.Status.COMPLETED: "completed_at", Batch.Status.CANCELLED: "cancelled_at",
             Batch.Status.EXPIRED: "expired_at"}[final]
    updated = Batch.objects.filter(pk=batch.pk, status=batch.status).update(
        status=final, **{stamp: timezone.now()},
        output_file=output, error_file=errors, completed_requests=succeeded, failed_requests=total - succeeded,
        **{key: value or 0 for key, value in totals.items()},
    )
    if not updated:  # someone else finished it first: keep theirs
        from files_api.services import file_delete

        for file in (output, errors):
            if file is not None:
                file_delete(file=file)
    else:
        log_transition(batch.id, final, f"{succeeded} succeeded, {total - succeeded} failed")
    return Batch.objects.get(pk=batch.pk)


def _mark_not_run(batch: Batch, code: str, message: str) -> None:
    """Every request that has no result yet gets an error line (pending ones, and running ones whose worker
    is gone)."""
    now = timezone.now()
    open_requests = BatchRequest.objects.filter(
        batch=batch, status__in=[BatchRequest.Status.PENDING, BatchRequest.Status.RUNNING])
    while True:
        chunk = list(open_requests.only("id", "custom_id")[:INSERT_CHUNK])
        if not chunk:
            return
        for item in chunk:
            item.status = BatchRequest.Status.ERRORED
            item.error_code = code
            item.finished_at = now
            item.result_line = error_line(custom_id=item.custom_id, code=code, message=message)
        with transaction.atomic():
            bulk_update_rows(BatchRequest, chunk, ["status", "error_code", "finished_at", "result_line"])


def _write_results(batch: Batch, status: str, kind: str) -> File | None:
    """Stream the result lines of one kind, in input order, into a batch_output file (None when there are none)."""
    lines = (BatchRequest.objects.filter(batch=batch, status=status).order_by("line")
             .values_list("result_line", flat=True))
    with tempfile.NamedTemporaryFile("w+b", suffix=".jsonl") as tmp:
        count = 0
        for line in lines.iterator(chunk_size=2000):
            tmp.write(line.encode())
            tmp.write(b"\n")
            count += 1
        if not count:
            return None
        tmp.flush()
        return file_create_from_local(project=batch.project, path=tmp.name, purpose=File.Purpose.BATCH_OUTPUT,
                                      filename=f"{batch.id}_{kind}.jsonl",
                                      expires_after=batch.output_expires_after)


# ------------------------------------------------------------------------------------------------ retry
def batch_retry_failed(*, batch: Batch) -> Batch:
    """A new batch of the same owner, endpoint and metadata, made of the requests of a finished batch that did
    not succeed: responses other than 2xx, and requests that never ran (errored, or left pending/running).
    Their lines are copied byte for byte from the parent's input file into a new input file, in input order;
    the new batch goes through batch_create (so it is validated like any other) and records its parent."""
    if batch.status not in Batch.FINAL_STATUSES:
        raise Conflict(f"Batch '{batch.id}' is {batch.status}; only a finished batch can be retried.")
    retry = (BatchRequest.objects.filter(batch=batch)
             .exclude(status=BatchRequest.Status.COMPLETED, status_code__gte=200, status_code__lt=300))
    if not retry.exists():
        raise Conflict(f"Batch '{batch.id}' has no failed or unrun requests to retry.")
    input_file = File.objects.filter(pk=batch.input_file_id).first()
    if input_file is None:
        raise Conflict(f"The input file '{batch.input_file_id}' of batch '{batch.id}' was deleted; its requests "
                       "cannot be read again.")
    with tempfile.NamedTemporaryFile("w+b", suffix=".jsonl") as tmp, file_open(input_file) as source:
        for offset, length in retry.order_by("line").values_list("offset", "length").iterator(chunk_size=2000):
            source.seek(offset)
            tmp.write(source.read(length))
            tmp.write(b"\n")
        tmp.flush()
        new_file = file_create_from_local(project=batch.project, path=tmp.name, purpose=File.Purpose.BATCH,
                                          filename=f"{batch.id}_retry.jsonl")
    expires_after = ({"anchor": "created_at", "seconds": batch.output_expires_after}
                     if batch.output_expires_after is not None else None)
    try:
        with transaction.atomic():
            new = batch_create(project=batch.project, input_file_id=new_file.id, endpoint=batch.endpoint,
                               completion_window=batch.completion_window, metadata=batch.metadata,
                               output_expires_after=expires_after)
            Batch.objects.filter(pk=new.pk).update(retry_of=batch)
    except Exception:
        from files_api.services import file_delete

        file_delete(file=new_file)
        raise
    new.retry_of = batch
    logger.info("batch %s retries %s", new.id, batch.id)
    return new
