"""File bytes in S3 (django-storages' S3Storage) against a real S3 server: moto's, as its own process.

The stack here has its own database: its task cluster must not share a queue with the session's, whose
storage is the local folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlparse, urlunparse

import boto3
import httpx
import openai
import psycopg
import pytest
from botocore.exceptions import ClientError
from openai import OpenAI

from tests.conftest import wait_for_status
from tests.helpers import jsonl, request_line, upload_batch_file
from tests.stack import ROOT, Proc, Stack, free_port, start_web, wait_for

BUCKET = "batchserver-test"
CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


class S3Server:
    """moto's S3 server on a free port, with one bucket."""

    def __init__(self, name: str) -> None:
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = Proc(
            name,
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            {**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

        def up() -> bool:
            assert self.proc.alive(), self.proc.tail()
            try:
                self.client.create_bucket(Bucket=BUCKET)
                return True
            except Exception:
                return False

        wait_for(up, 60, interval=0.2, message=f"the S3 server {name}")

    def storage_env(self) -> dict[str, str]:
        options = {"bucket_name": BUCKET, "endpoint_url": self.endpoint, "addressing_style": "path", **CREDENTIALS}
        # One attempt: an S3 that does not answer fails the request at once instead of after botocore's retries.
        return {
            "BATCHSERVER_FILE_STORAGE": "storages.backends.s3.S3Storage",
            "BATCHSERVER_FILE_STORAGE_OPTIONS": json.dumps(options),
            "AWS_MAX_ATTEMPTS": "1",
        }

    def keys(self, prefix: str = "") -> set[str]:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return {item["Key"] for item in listed.get("Contents", [])}

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server("moto-s3")
    yield server
    server.proc.stop()


@pytest.fixture(scope="module")
def s3_stack(stack_env, s3) -> Iterator[Stack]:
    """Server, task cluster and a fake-engine worker whose file bytes live in the S3 bucket."""
    admin_url = urlunparse(urlparse(stack_env["DATABASE_URL"])._replace(path="/postgres"))
    stack = Stack("s3storage", admin_url=admin_url, extra_env=s3.storage_env())
    with stack:
        stack.start_server()
        stack.start_worker("fake", ["fake-echo"])
        yield stack
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "batchserver_s3storage" WITH (FORCE)')


@pytest.fixture(scope="module")
def s3_client(s3_stack) -> OpenAI:
    return OpenAI(base_url=f"{s3_stack.url}/v1", api_key=s3_stack.api_key, max_retries=0, timeout=60)


def file_rows(stack: Stack) -> dict[str, tuple[str, str]]:
    """File id → (filename, storage name), read from the stack's database."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT id, filename, storage_name FROM files_api_file").fetchall()
    return {file_id: (filename, storage_name) for file_id, filename, storage_name in rows}


def storage_names(stack: Stack) -> dict[str, str]:
    return {file_id: storage_name for file_id, (_, storage_name) in file_rows(stack).items()}


def filenames(stack: Stack) -> set[str]:
    return {filename for filename, _ in file_rows(stack).values()}


def manage_shell(stack: Stack, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_files_are_uploaded_to_streamed_from_and_deleted_in_the_bucket(s3, s3_stack, s3_client):
    data = b"".join(b"line %07d of a file kept in S3\n" % i for i in range(100_000))  # ~3.2 MB
    created = s3_client.files.create(file=("big.txt", io.BytesIO(data)), purpose="user_data")
    key = storage_names(s3_stack)[created.id]
    assert s3.read(key) == data

    with s3_client.files.with_streaming_response.content(created.id) as response:
        assert response.headers["content-length"] == str(len(data))
        streamed = b"".join(response.iter_bytes(64 * 1024))
    assert streamed == data

    s3_client.files.delete(created.id)
    assert key not in s3.keys()
    with pytest.raises(openai.NotFoundError):
        s3_client.files.retrieve(created.id)


def test_uploads_in_parts_are_joined_into_the_bucket_and_the_parts_removed(s3, s3_stack, s3_client, tmp_path):
    data = jsonl([request_line(f"part-{i}") for i in range(300)])
    path = tmp_path / "parts.jsonl"
    path.write_bytes(data)
    upload = s3_client.uploads.upload_file_chunked(
        file=path, mime_type="application/jsonl", purpose="batch", part_size=4096, md5=hashlib.md5(data).hexdigest()
    )
    assert upload.status == "completed"
    assert s3.read(storage_names(s3_stack)[upload.file.id]) == data
    assert not s3.keys(f"uploads/{upload.id}/")


def test_a_batch_writes_its_output_file_to_the_bucket(s3, s3_stack, s3_client):
    batch_input = upload_batch_file(s3_client, [request_line(f"r{i}") for i in range(3)])
    batch = s3_client.batches.create(
        input_file_id=batch_input.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_for_status(s3_client, batch.id, {"completed", "failed"}, timeout=120)
    assert batch.status == "completed", batch.errors
    output = s3_client.files.content(batch.output_file_id).read()
    assert [json.loads(line)["custom_id"] for line in output.splitlines()] == ["r0", "r1", "r2"]
    assert s3.read(storage_names(s3_stack)[batch.output_file_id]) == output


def test_retention_deletes_expired_bytes_from_the_bucket_but_keeps_unfinished_inputs(s3, s3_stack, s3_client):
    old = s3_client.files.create(
        file=("old.txt", io.BytesIO(b"bye")),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    # No worker of this stack serves fake-echo-b: its batch stays in progress.
    needed = upload_batch_file(s3_client, [request_line("r", model="fake-echo-b")])
    batch = s3_client.batches.create(input_file_id=needed.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for_status(s3_client, batch.id, {"in_progress"}, timeout=60)
    names = storage_names(s3_stack)

    result = manage_shell(
        s3_stack,
        (
            "import json; from datetime import timedelta; from django.utils import timezone; "
            "from files_api.models import File; from files_api.tasks import delete_expired_files; "
            f"File.objects.filter(pk__in=['{old.id}', '{needed.id}'])"
            ".update(expires_at=timezone.now() - timedelta(seconds=1)); "
            "print(json.dumps(delete_expired_files()))"
        ),
    )

    assert json.loads(result.strip().splitlines()[-1])["deleted_files"] >= 1
    assert names[old.id] not in s3.keys()
    assert names[needed.id] in s3.keys()
    assert s3_client.files.content(needed.id).read() == jsonl([request_line("r", model="fake-echo-b")])
    s3_client.batches.cancel(batch.id)


def test_an_s3_outage_is_a_clean_server_error_and_leaves_no_row(s3_stack, tmp_path):
    """S3 stops answering: uploads and downloads fail with OpenAI's server_error envelope, no File row points to
    bytes that were never written, and /readyz names the storage without its address or bucket."""
    outage = S3Server("moto-s3-outage")
    web, url = start_web(
        "s3-outage-server",
        {**s3_stack.env, **outage.storage_env(), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")},
    )
    client = OpenAI(base_url=f"{url}/v1", api_key=s3_stack.api_key, max_retries=0, timeout=60)
    try:
        kept = client.files.create(file=("before.txt", io.BytesIO(b"stored")), purpose="user_data")
        outage.proc.stop()

        with pytest.raises(openai.InternalServerError) as raised:
            client.files.create(file=("during.txt", io.BytesIO(b"x" * 100_000)), purpose="user_data")
        downloaded = httpx.get(
            f"{url}/v1/files/{kept.id}/content", headers={"Authorization": f"Bearer {s3_stack.api_key}"}
        )
        ready = httpx.get(f"{url}/readyz")
    finally:
        web.stop()
    assert raised.value.body["type"] == "server_error"
    assert "during.txt" not in filenames(s3_stack)
    assert downloaded.status_code == 500
    assert set(downloaded.json()["error"]) == {"message", "type", "param", "code"}
    assert ready.status_code == 503
    assert ready.json()["checks"]["storage"].startswith("error: the file storage does not answer")
    assert BUCKET not in ready.text and urlparse(outage.endpoint).netloc not in ready.text


def test_a_missing_bucket_refuses_uploads_without_a_row(s3_stack, s3, tmp_path):
    options = json.loads(s3.storage_env()["BATCHSERVER_FILE_STORAGE_OPTIONS"])
    env = {
        **s3_stack.env,
        **s3.storage_env(),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "BATCHSERVER_FILE_STORAGE_OPTIONS": json.dumps({**options, "bucket_name": "no-such-bucket"}),
    }
    web, url = start_web("s3-missing-bucket-server", env)
    try:
        response = httpx.post(
            f"{url}/v1/files",
            headers={"Authorization": f"Bearer {s3_stack.api_key}"},
            files={"file": ("lost.txt", b"abc")},
            data={"purpose": "user_data"},
        )
    finally:
        web.stop()
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "lost.txt" not in filenames(s3_stack)
    with pytest.raises(ClientError):
        s3.client.head_bucket(Bucket="no-such-bucket")
