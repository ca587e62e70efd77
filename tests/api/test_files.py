"""/v1/files and /v1/uploads through the official SDK over real HTTP."""

from __future__ import annotations

import hashlib
import io
import time

import openai
import pytest
from openai.types import FileDeleted, FileObject
from openai.types.upload import Upload

from tests.helpers import jsonl, request_line, upload_batch_file


def test_upload_retrieve_content_list_delete(client):
    body = jsonl([request_line(f"r{i}") for i in range(3)])
    before = int(time.time())
    created = client.files.create(file=("requests.jsonl", io.BytesIO(body)), purpose="batch")
    assert isinstance(created, FileObject)
    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(body)
    assert created.filename == "requests.jsonl"
    assert created.purpose == "batch"
    assert created.status == "processed"
    assert before <= created.created_at <= int(time.time())
    assert created.expires_at == created.created_at + 30 * 24 * 3600  # batch files: 30 days by default

    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).read() == body
    assert created.id in [f.id for f in client.files.list(purpose="batch")]

    deleted = client.files.delete(created.id)
    assert isinstance(deleted, FileDeleted)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_expires_after_sets_expiry(client):
    created = client.files.create(
        file=("notes.txt", io.BytesIO(b"hello")),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 7200},
    )
    assert created.expires_at == created.created_at + 7200
    plain = client.files.create(file=("notes.txt", io.BytesIO(b"hello")), purpose="assistants")
    assert plain.expires_at is None


def test_list_pages_with_after_limit_and_order(client):
    ids = [client.files.create(file=(f"f{i}.txt", io.BytesIO(b"x")), purpose="evals").id for i in range(5)]
    first = client.files.list(purpose="evals", limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2]
    assert first.has_more is True
    assert first.first_id == ids[-1] and first.last_id == ids[-2]
    everything = [f.id for f in client.files.list(purpose="evals", limit=2)]  # the SDK follows after=
    assert everything[:5] == ids[::-1]
    ascending = client.files.list(purpose="evals", order="asc", limit=10)
    assert [f.id for f in ascending.data][-5:] == ids
    assert ascending.has_more is False


def test_upload_in_parts_with_the_sdk_helper(client, tmp_path):
    path = tmp_path / "big.jsonl"
    data = jsonl([request_line(f"part-{i}") for i in range(200)])
    path.write_bytes(data)
    upload = client.uploads.upload_file_chunked(
        file=path, mime_type="application/jsonl", purpose="batch", part_size=1000, md5=hashlib.md5(data).hexdigest()
    )
    assert isinstance(upload, Upload)
    assert upload.status == "completed"
    assert upload.file is not None and upload.file.bytes == len(data)
    assert upload.file.filename == "big.jsonl"
    assert client.files.content(upload.file.id).read() == data


def test_upload_complete_checks_byte_count_and_md5(client):
    upload = client.uploads.create(bytes=10, filename="x.jsonl", mime_type="application/jsonl", purpose="batch")
    part = client.uploads.parts.create(upload.id, data=b"0123")
    with pytest.raises(openai.BadRequestError, match="4 bytes"):
        client.uploads.complete(upload.id, part_ids=[part.id])
    part2 = client.uploads.parts.create(upload.id, data=b"456789")
    with pytest.raises(openai.BadRequestError, match="md5"):
        client.uploads.complete(upload.id, part_ids=[part.id, part2.id], md5="0" * 32)
    done = client.uploads.complete(upload.id, part_ids=[part2.id, part.id])
    assert client.files.content(done.file.id).read() == b"4567890123"  # in the order given


def test_cancelled_upload_takes_no_more_parts(client):
    upload = client.uploads.create(bytes=4, filename="x.jsonl", mime_type="application/jsonl", purpose="batch")
    cancelled = client.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.uploads.parts.create(upload.id, data=b"0123")


def test_batch_file_uploaded_through_sdk_object_matches_list(client):
    created = upload_batch_file(client, [request_line("a")])
    listed = {f.id: f for f in client.files.list(purpose="batch").data}
    assert listed[created.id] == created


# ------------------------------------------------------------------------------------ file names
def test_non_latin1_filename_comes_back_in_an_rfc6266_header(client):
    created = client.files.create(file=("résumé 中文.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    assert created.filename == "résumé 中文.jsonl"
    response = client.files.with_raw_response.content(created.id)
    assert (
        response.headers["content-disposition"].lower()
        == "attachment; filename*=utf-8''r%c3%a9sum%c3%a9%20%e4%b8%ad%e6%96%87.jsonl"
    )
    assert response.content == b"{}\n"


def test_quotes_in_an_ascii_filename_are_escaped_in_the_header(http, client, db_access):
    from files_api.models import File

    created = client.files.create(file=("plain.txt", io.BytesIO(b"x")), purpose="user_data")
    File.objects.filter(pk=created.id).update(filename='say "hi".txt')
    response = http.get(f"/v1/files/{created.id}/content")
    assert response.headers["content-disposition"] == 'attachment; filename="say \\"hi\\".txt"'


def test_a_stored_name_with_line_breaks_downloads_with_an_encoded_header(http, client, db_access):
    """Names stored before line breaks were refused still download; the header cannot be split."""
    from files_api.models import File

    created = client.files.create(file=("plain.txt", io.BytesIO(b"x")), purpose="user_data")
    File.objects.filter(pk=created.id).update(filename="two\r\nlines.txt")
    response = http.get(f"/v1/files/{created.id}/content")
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == "attachment; filename*=utf-8''two%0D%0Alines.txt"
    assert response.content == b"x"


@pytest.mark.parametrize(
    "filename", ["two\r\nlines.jsonl", "tab\there.jsonl", "bell\x07.jsonl", "x" * 600 + ".jsonl", ""]
)
def test_upload_filenames_that_could_break_headers_or_logs_are_refused(http, filename):
    response = http.post(
        "/v1/uploads", json={"bytes": 3, "filename": filename, "mime_type": "application/jsonl", "purpose": "batch"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "filename"


def test_control_characters_in_a_multipart_filename_are_dropped(http):
    body = (
        b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="red\x1b[31m.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nx\r\n--b--\r\n"
    )
    response = http.post("/v1/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "red[31m.txt"


# ------------------------------------------------------------------------------------ uploads: bounds
@pytest.mark.parametrize("mime_type", ["x" * 300, "not a mime type", "text/plain\r\nX-Injected: 1", "*/*"])
def test_upload_mime_type_must_be_a_bounded_mime_type(http, mime_type):
    response = http.post(
        "/v1/uploads", json={"bytes": 3, "filename": "x.jsonl", "mime_type": mime_type, "purpose": "batch"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "mime_type"


def test_upload_accepts_mime_types_with_parameters(client):
    upload = client.uploads.create(
        bytes=3, filename="x.jsonl", mime_type="application/jsonl; charset=utf-8", purpose="batch"
    )
    assert upload.status == "pending"


def test_upload_refuses_the_part_that_would_exceed_its_bytes(client):
    upload = client.uploads.create(bytes=10, filename="x.jsonl", mime_type="application/jsonl", purpose="batch")
    first = client.uploads.parts.create(upload.id, data=b"0123456")
    with pytest.raises(openai.BadRequestError, match="3 bytes are left") as raised:
        client.uploads.parts.create(upload.id, data=b"78901")
    assert raised.value.param == "data"
    last = client.uploads.parts.create(upload.id, data=b"789")
    done = client.uploads.complete(upload.id, part_ids=[first.id, last.id])
    assert client.files.content(done.file.id).read() == b"0123456789"


def test_upload_refuses_parts_past_the_configured_count(client, db_access, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from files_api import services
    from files_api.models import Upload

    settings.BATCHSERVER_MAX_UPLOAD_PARTS = 2
    upload = Upload.objects.get(
        pk=client.uploads.create(bytes=3, filename="x.jsonl", mime_type="application/jsonl", purpose="batch").id
    )
    for data in (b"a", b"b"):
        services.upload_add_part(upload=upload, data=SimpleUploadedFile("part", data))
    with pytest.raises(services.InvalidRequest, match="2 parts"):
        services.upload_add_part(upload=upload, data=SimpleUploadedFile("part", b"c"))
    assert upload.parts.count() == 2


# ------------------------------------------------------------------------------------ uploads: completing
def orphaned_bytes() -> set[str]:
    """Stored file bytes that no File row points to."""
    from django.core.files.storage import default_storage

    from files_api.models import File

    stored = (
        {f"files/{name}" for name in default_storage.listdir("files")[1]} if default_storage.exists("files") else set()
    )
    return stored - set(File.objects.values_list("storage_name", flat=True))


@pytest.mark.parametrize("change", [{"status": "cancelled"}, {"status": "completed"}, {"expires_at": "past"}])
def test_completing_an_upload_that_changed_meanwhile_stores_nothing(client, db_access, change):
    """The bytes are written before the Upload is marked completed, outside any lock: an Upload cancelled,
    completed or expired meanwhile loses the conditional update, and the bytes just written are deleted."""
    from datetime import timedelta

    from django.utils import timezone

    from files_api import services
    from files_api.models import File, Upload

    filename = f"changed-{next(iter(change))}.jsonl"
    created = client.uploads.create(bytes=3, filename=filename, mime_type="application/jsonl", purpose="batch")
    part = client.uploads.parts.create(created.id, data=b"{}\n")
    upload = services.upload_get(project=Upload.objects.get(pk=created.id).project, upload_id=created.id)
    if change.get("expires_at"):
        change = {"expires_at": timezone.now() - timedelta(seconds=1)}
    Upload.objects.filter(pk=created.id).update(**change)  # as another request would, after our read
    orphans_before = orphaned_bytes()

    with pytest.raises(services.Conflict):
        services.upload_complete(upload=upload, part_ids=[part.id])

    assert not File.objects.filter(filename=filename).exists()
    assert orphaned_bytes() <= orphans_before
    assert Upload.objects.get(pk=created.id).file_id is None


class BreaksMidway(io.BytesIO):
    """An upload whose stream fails after its first megabyte, as a dropped client connection does."""

    name, size = "broken.txt", 3 * 1024 * 1024

    def read(self, size=-1):
        if self.tell() >= 1024 * 1024:
            raise OSError("connection reset while reading the upload")
        return super().read(1024 * 1024)


def test_a_write_that_breaks_midway_leaves_no_row_and_no_bytes(db_access):
    from django.core.files import File as DjangoFile

    from batchserver.models import Project
    from files_api import services
    from files_api.models import File

    project, _ = Project.objects.get_or_create(name="alice")
    orphans_before = orphaned_bytes()
    with pytest.raises(OSError, match="connection reset"):
        services.file_create(
            project=project, content=DjangoFile(BreaksMidway(b"x" * BreaksMidway.size)), purpose="user_data"
        )
    assert not File.objects.filter(filename="broken.txt").exists()
    assert orphaned_bytes() <= orphans_before
