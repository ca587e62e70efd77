"""Writes for files and uploads. Bytes are streamed to and from Django's default storage in chunks."""

from __future__ import annotations

import codecs
import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.core.files import File as DjangoFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from batchserver.errors import Conflict, InvalidRequest, NotFound, TooLarge
from batchserver.limits import human_bytes, lock_project, stored_bytes_limit
from batchserver.models import Project
from files_api.models import File, Upload, UploadPart
from files_api.usage import files_in_use

logger = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK = 1024 * 1024
DEFAULT_BATCH_FILE_TTL = timedelta(days=30)  # OpenAI: files for batches expire after 30 days
UPLOAD_TTL = timedelta(hours=1)


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MB"


# ------------------------------------------------------------------------------------------------ checks
def check_size(*, purpose: str, size: int, filename: str, param: str = "file") -> None:
    limit = settings.BATCHSERVER_MAX_FILE_BYTES
    if purpose == File.Purpose.BATCH:
        limit = min(limit, settings.BATCHSERVER_MAX_BATCH_FILE_BYTES)
    if size > limit:
        raise TooLarge(
            f"File '{filename}' is {_mb(size)}; files for purpose '{purpose}' may be at most {_mb(limit)}. "
            "Split it into several files.",
            param=param,
        )


def check_batch_input_name(*, purpose: str, filename: str, param: str = "file") -> None:
    if purpose == File.Purpose.BATCH and not filename.lower().endswith(".jsonl"):
        raise InvalidRequest(
            f"Invalid file format for Batch API: '{filename}'. Must be .jsonl (one JSON request per line).",
            param=param,
        )


def stored_bytes(project_id: int) -> int:
    """What a project stores: its files, and the parts of its pending Uploads."""
    files = File.objects.filter(project_id=project_id).aggregate(total=Sum("bytes"))["total"] or 0
    parts = (
        UploadPart.objects.filter(upload__project_id=project_id, upload__status=Upload.Status.PENDING).aggregate(
            total=Sum("bytes")
        )["total"]
        or 0
    )
    return files + parts


def check_storage(*, project: Project, size: int, param: str, locked: bool = False, counted: bool = False) -> None:
    """Refuse `size` more bytes that would take the project past its storage limit. `locked`: inside the transaction
    that records them, with the project's row locked first, so that two uploads take turns and the second counts the
    first (without it: an early check, before any byte is written). `counted`: the bytes are in the sum already."""
    if locked:
        project = lock_project(project.pk)
    limit = stored_bytes_limit(project)
    if limit is None:
        return
    stored = stored_bytes(project.pk) - (size if counted else 0)
    if stored + size > limit:
        raise InvalidRequest(
            f"Project '{project.name}' stores {human_bytes(stored)} of files; {human_bytes(size)} more would take it "
            f"past its storage limit of {human_bytes(limit)}. Delete files it no longer needs (DELETE "
            "/v1/files/{file_id}), or ask the server's operator for a higher limit, then upload again.",
            param=param,
            code="storage_limit_exceeded",
        )


def check_utf8(chunks: Iterable[bytes], *, filename: str, param: str = "file") -> None:
    """Reject a batch input that is not UTF-8 text (binary files included), reading it once, chunk by chunk."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        for chunk in chunks:
            if b"\x00" in chunk:
                raise InvalidRequest(
                    f"File '{filename}' looks binary (it contains NUL bytes near byte {offset + chunk.index(0)}). "
                    "A batch input must be UTF-8 JSONL text.",
                    param=param,
                )
            decoder.decode(chunk)
            offset += len(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"File '{filename}' is not valid UTF-8 (bad byte near position {offset + exc.start}). "
            "A batch input must be UTF-8 JSONL text.",
            param=param,
        ) from None


# ------------------------------------------------------------------------------------------------ files
def _expiry(purpose: str, expires_after: int | None, created_at: datetime) -> datetime | None:
    if expires_after is not None:
        return created_at + timedelta(seconds=expires_after)
    if purpose in (File.Purpose.BATCH, File.Purpose.BATCH_OUTPUT):
        return created_at + DEFAULT_BATCH_FILE_TTL
    return None


def _write_then_record(name: str, content, record: Callable[[str], T]) -> T:
    """Write bytes to storage under `name`, outside any transaction, then call `record(stored_name)` to insert
    the rows that point to them.

    Rows come only after the bytes are written, so no row ever points to missing bytes; if the write breaks
    midway, or `record` fails or refuses, the bytes are deleted again (our names are fresh ids: nothing else
    lives under them).
    """
    try:
        stored = default_storage.save(name, content)
    except Exception:
        _delete_bytes(name)
        raise
    try:
        return record(stored)
    except BaseException:
        _delete_bytes(stored)
        raise


def _new_file(*, project: Project, purpose: str, filename: str, size: int, expires_after: int | None) -> File:
    created_at = timezone.now()
    return File(
        project=project,
        purpose=purpose,
        filename=filename,
        bytes=size,
        created_at=created_at,
        expires_at=_expiry(purpose, expires_after, created_at),
    )


def _store(file: File, content: DjangoFile, *, then: Callable[[File], None] | None = None) -> File:
    """Save the bytes under a name we choose (never the client's), then insert the row; `then` runs in the
    row's transaction (a conditional update that may still refuse, and so undo, the whole file)."""

    def insert(stored: str) -> File:
        with transaction.atomic():
            file.storage_name = stored
            file.save(force_insert=True)
            if then is not None:
                then(file)
        return file

    return _write_then_record(f"files/{file.id}", content, insert)


def file_create(*, project: Project, content: DjangoFile, purpose: str, expires_after: int | None = None) -> File:
    """Store an uploaded file (a Django UploadedFile: already spooled to a temporary file when large)."""
    filename = content.name
    assert filename is not None  # DRF's FileField refuses a file without a name
    check_batch_input_name(purpose=purpose, filename=filename)
    check_size(purpose=purpose, size=content.size, filename=filename)
    check_storage(project=project, size=content.size, param="file")  # early: before the bytes are written
    if purpose == File.Purpose.BATCH:
        check_utf8(content.chunks(CHUNK), filename=filename)
        content.seek(0)

    def within_storage(file: File) -> None:
        check_storage(project=project, size=file.bytes, param="file", locked=True, counted=True)

    return _store(
        _new_file(project=project, purpose=purpose, filename=filename, size=content.size, expires_after=expires_after),
        content,
        then=within_storage,
    )


def file_create_from_local(
    *, project: Project, path: str, purpose: str, filename: str, expires_after: int | None = None
) -> File:
    """Store a file the server wrote itself (batch output and error files)."""
    with open(path, "rb") as fh:
        content = DjangoFile(fh, name=filename)
        return _store(
            _new_file(
                project=project, purpose=purpose, filename=filename, size=content.size, expires_after=expires_after
            ),
            content,
        )


def file_get(*, project: Project, file_id: str, param: str | None = None) -> File:
    file = File.objects.filter(project=project, pk=file_id).first()
    if file is None:
        raise NotFound.object("file", file_id, param=param)
    return file


def file_open(file: File):
    return default_storage.open(file.storage_name, "rb")


def file_iter_chunks(file: File, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk. The file is opened now, not on the first chunk: a storage that does not
    answer is an error response, not a 200 cut short after its headers."""
    return _chunks(file_open(file), chunk_size)


def _chunks(fh, chunk_size: int) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(chunk_size):
            yield chunk


def file_delete(*, file: File) -> None:
    """Delete the row and its bytes. Refused while something still needs the file (an unfinished batch reads its
    input: see files_api.usage)."""
    with transaction.atomic():
        needed = files_in_use([file.id]).get(file.id)
        if needed is not None:
            raise Conflict(needed.refusal(), param="file_id")
        File.objects.filter(pk=file.pk).delete()
        name = file.storage_name
        transaction.on_commit(lambda: _delete_bytes(name))


def _delete_bytes(name: str) -> None:
    try:
        default_storage.delete(name)
    except Exception:  # the row is gone; stray bytes are only wasted space, never a wrong answer
        logger.exception("Could not delete stored bytes %s", name)


# ------------------------------------------------------------------------------------------------ uploads
def upload_create(
    *, project: Project, filename: str, purpose: str, size: int, mime_type: str, expires_after: int | None = None
) -> Upload:
    check_batch_input_name(purpose=purpose, filename=filename, param="filename")
    if size > settings.BATCHSERVER_MAX_UPLOAD_BYTES:
        raise TooLarge(f"An Upload may be at most {_mb(settings.BATCHSERVER_MAX_UPLOAD_BYTES)}.", param="bytes")
    check_size(purpose=purpose, size=size, filename=filename, param="bytes")
    check_storage(project=project, size=size, param="bytes")  # its parts are checked as they come
    now = timezone.now()
    return Upload.objects.create(
        project=project,
        filename=filename,
        purpose=purpose,
        bytes=size,
        mime_type=mime_type,
        created_at=now,
        expires_at=now + UPLOAD_TTL,
        file_expires_after=expires_after,
    )


def upload_get(*, project: Project, upload_id: str) -> Upload:
    upload = Upload.objects.select_related("file").filter(project=project, pk=upload_id).first()
    if upload is None:
        raise NotFound.object("upload", upload_id)
    return upload


def upload_expire(*, upload: Upload) -> bool:
    """Mark a pending Upload past its expiry expired (a conditional update) and delete its parts."""
    if upload.status != Upload.Status.PENDING or upload.expires_at > timezone.now():
        return False
    expired = Upload.objects.filter(pk=upload.pk, status=Upload.Status.PENDING).update(status=Upload.Status.EXPIRED)
    upload.status = Upload.Status.EXPIRED
    if expired:
        delete_upload_parts(upload)
    return bool(expired)


def _require_pending(upload: Upload) -> None:
    """Refuse a request on an Upload that is not pending (one past its expiry is expired first)."""
    upload_expire(upload=upload)
    if upload.status != Upload.Status.PENDING:
        raise Conflict(
            f"Upload '{upload.id}' is {upload.status}; only a pending Upload takes this request. Start a new Upload."
        )


def _check_part_fits(upload: Upload, size: int) -> None:
    """A part may not take the Upload past its part count or its declared size."""
    parts = upload.parts.aggregate(count=Count("id"), total=Sum("bytes"))
    count, total = parts["count"], parts["total"] or 0
    if count >= settings.BATCHSERVER_MAX_UPLOAD_PARTS:
        raise InvalidRequest(
            f"Upload '{upload.id}' already has {count} parts, the most one Upload takes. Send larger parts "
            "in a new Upload.",
            param="data",
        )
    if total + size > upload.bytes:
        raise InvalidRequest(
            f"This part of {size} bytes would bring Upload '{upload.id}' to {total + size} bytes, more than the "
            f"{upload.bytes} bytes it was created for. {upload.bytes - total} bytes are left to send.",
            param="data",
        )


def upload_add_part(*, upload: Upload, data: DjangoFile) -> UploadPart:
    _require_pending(upload)
    if data.size > settings.BATCHSERVER_MAX_UPLOAD_PART_BYTES:
        raise TooLarge(f"A part may be at most {_mb(settings.BATCHSERVER_MAX_UPLOAD_PART_BYTES)}.", param="data")
    _check_part_fits(upload, data.size)  # early, before the bytes are written
    check_storage(project=upload.project, size=data.size, param="data")
    part = UploadPart(upload=upload, bytes=data.size)

    def insert(stored: str) -> UploadPart:
        with transaction.atomic():
            # Again under the Upload's lock: parts may arrive in parallel, and a cancel may have come meanwhile.
            locked = Upload.objects.select_for_update().get(pk=upload.pk)
            _require_pending(locked)
            _check_part_fits(locked, data.size)
            check_storage(project=upload.project, size=data.size, param="data", locked=True)
            part.storage_name = stored
            part.save(force_insert=True)
        return part

    return _write_then_record(f"uploads/{upload.id}/{part.id}", data, insert)


def upload_complete(*, upload: Upload, part_ids: list[str], md5: str | None = None) -> Upload:
    """Join the parts, in the order given, into a File; check the byte count (and md5 when given)."""
    _require_pending(upload)
    parts = {p.id: p for p in upload.parts.filter(pk__in=part_ids)}
    missing = [pid for pid in part_ids if pid not in parts]
    if missing:
        raise InvalidRequest(f"Invalid 'part_ids': no part '{missing[0]}' in Upload '{upload.id}'.", param="part_ids")
    total = sum(parts[pid].bytes for pid in part_ids)
    if total != upload.bytes:
        raise InvalidRequest(
            f"The parts add up to {total} bytes, but the Upload was created for {upload.bytes} bytes.",
            param="part_ids",
        )
    with tempfile.TemporaryFile() as joined:
        _join_parts(upload, [parts[pid] for pid in part_ids], joined, md5)

        def mark_completed(file: File) -> None:
            # Only a still pending Upload completes: one cancelled, expired or completed while the bytes were
            # written makes this raise, which undoes the File row and deletes its bytes.
            pending = Upload.objects.filter(pk=upload.pk, status=Upload.Status.PENDING, expires_at__gt=timezone.now())
            if not pending.update(status=Upload.Status.COMPLETED, file=file):
                _require_pending(Upload.objects.get(pk=upload.pk))
                raise Conflict(
                    f"Upload '{upload.id}' changed while it was being completed. Retrieve it to see its status."
                )

        # The bytes are written first, outside any transaction: a lock held while up to 512 MB are copied
        # would stop every other writer (all of them, on SQLite).
        _store(
            _new_file(
                project=upload.project,
                purpose=upload.purpose,
                filename=upload.filename,
                size=total,
                expires_after=upload.file_expires_after,
            ),
            DjangoFile(joined, name=upload.filename),
            then=mark_completed,
        )
    delete_upload_parts(upload)
    return upload_get(project=upload.project, upload_id=upload.id)


def _join_parts(upload: Upload, parts: list[UploadPart], joined, md5: str | None) -> None:
    """Copy the parts, in order, into `joined` (left at its start); check the md5 when given, and that a batch
    input is UTF-8 text."""
    digest = hashlib.md5(usedforsecurity=False)
    for part in parts:
        with default_storage.open(part.storage_name, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                joined.write(chunk)
    if md5 and md5.lower() != digest.hexdigest():
        raise InvalidRequest(f"The md5 of the joined parts is {digest.hexdigest()}, not '{md5}'.", param="md5")
    if upload.purpose == File.Purpose.BATCH:
        joined.seek(0)
        check_utf8(iter(lambda: joined.read(CHUNK), b""), filename=upload.filename, param="part_ids")
    joined.seek(0)


def upload_cancel(*, upload: Upload) -> Upload:
    _require_pending(upload)
    Upload.objects.filter(pk=upload.pk, status=Upload.Status.PENDING).update(status=Upload.Status.CANCELLED)
    delete_upload_parts(upload)
    return upload_get(project=upload.project, upload_id=upload.id)


def delete_upload_parts(upload: Upload) -> None:
    for part in upload.parts.all():
        _delete_bytes(part.storage_name)
    upload.parts.all().delete()
