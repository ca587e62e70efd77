"""Retention: expired files are deleted (row and bytes), never one a running batch still needs."""

from __future__ import annotations

import io
from datetime import timedelta

from django.core.files.storage import default_storage
from django.utils import timezone

from tests.conftest import wait_for_status
from tests.helpers import request_line, upload_batch_file


def test_expired_files_are_deleted_but_not_inputs_of_running_batches(client, db_access):
    from files_api.models import File, Upload
    from files_api.tasks import delete_expired_files

    old = client.files.create(
        file=("old.txt", io.BytesIO(b"bye")),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    keep = client.files.create(file=("keep.txt", io.BytesIO(b"hi")), purpose="user_data")
    needed = upload_batch_file(client, [request_line("r")])
    batch = client.batches.create(input_file_id=needed.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for_status(client, batch.id, {"in_progress"}, timeout=30)
    upload = client.uploads.create(bytes=4, filename="u.jsonl", mime_type="application/jsonl", purpose="batch")
    client.uploads.parts.create(upload.id, data=b"abcd")
    past = timezone.now() - timedelta(seconds=1)
    File.objects.filter(pk__in=[old.id, needed.id]).update(expires_at=past)
    Upload.objects.filter(pk=upload.id).update(expires_at=past)
    storage_name = File.objects.get(pk=old.id).storage_name

    result = delete_expired_files()

    assert result["deleted_files"] >= 1 and result["expired_uploads"] >= 1
    assert not File.objects.filter(pk=old.id).exists()
    assert not default_storage.exists(storage_name)
    assert File.objects.filter(pk__in=[keep.id, needed.id]).count() == 2  # not expired / still needed
    assert Upload.objects.get(pk=upload.id).status == "expired"
    assert not Upload.objects.get(pk=upload.id).parts.exists()
    client.batches.cancel(batch.id)


def test_batch_output_files_expire_as_asked(client, db_access):
    from files_api.models import File

    batch = client.batches.create(
        input_file_id=upload_batch_file(client, [request_line("x")]).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    wait_for_status(client, batch.id, {"in_progress"}, timeout=30)
    client.batches.cancel(batch.id)
    batch = wait_for_status(client, batch.id, {"cancelled"}, timeout=30)
    error_file = File.objects.get(pk=batch.error_file_id)
    assert error_file.purpose == "batch_output"
    assert abs((error_file.expires_at - error_file.created_at).total_seconds() - 7200) < 1
