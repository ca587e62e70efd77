"""Fixtures of the admin (operator console) tests: staff users with and without permissions, and builders of
projects, files, batches and requests written straight to the test database."""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone


@pytest.fixture(autouse=True)
def plain_static_files(settings):
    """The Django test client renders pages without `collectstatic`: serve static names unhashed. (The browser
    tests run the real manifest storage, after collectstatic, in their own server.)"""
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing folder


@pytest.fixture
def project(db):
    from batchserver.models import Project

    return Project.objects.create(name="team-a")


@pytest.fixture
def other_project(db):
    from batchserver.models import Project

    return Project.objects.create(name="team-b")


def make_user(django_user_model, username: str, *, staff: bool = True, perms: list[str] = ()):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username=username, password="pw-" + username, is_staff=staff)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def login(user):
    """A Django test client logged in as this user. (The suite's `client` fixture is the OpenAI SDK.)"""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


VIEW_PERMS = ["batches_api.view_batch", "files_api.view_file", "batchserver.view_apikey",
              "batchserver.view_project", "batches_api.view_worker"]


@pytest.fixture
def viewer_client(db, django_user_model):
    """A staff user who may view everything but change or delete nothing."""
    return login(make_user(django_user_model, "viewer", perms=VIEW_PERMS))


def write_file(project, data: bytes, *, purpose: str = "batch", filename: str = "input.jsonl"):
    from files_api.services import file_create_from_local

    with tempfile.NamedTemporaryFile(suffix=".jsonl") as tmp:
        tmp.write(data)
        tmp.flush()
        return file_create_from_local(project=project, path=tmp.name, purpose=purpose, filename=filename)


def request_json(custom_id: str, model: str = "fake-echo", max_tokens: int = 4) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": custom_id}]}}


def make_batch(project, *, status: str = "in_progress", model: str = "fake-echo", total: int = 0, completed: int = 0,
               failed: int = 0, errored: int = 0, input_file=None, with_requests: bool = False, **fields):
    """A batch in any state. with_requests: a real input file and one BatchRequest per line, in this order:
    `completed` with a 200, `failed` with a 400, `errored` never run (error file), the rest pending."""
    from batches_api.models import Batch, BatchRequest

    now = timezone.now()
    lines = []
    if with_requests:
        lines = [json.dumps(request_json(f"r{i}", model)).encode() for i in range(total)]
        input_file = write_file(project, b"".join(line + b"\n" for line in lines))
    if input_file is None:
        input_file = write_file(project, json.dumps(request_json("only", model)).encode() + b"\n")
    defaults = dict(project=project, endpoint="/v1/chat/completions", model=model, status=status,
                    input_file=input_file, total_requests=total, completed_requests=completed,
                    failed_requests=failed + errored, created_at=now - timedelta(minutes=10),
                    expires_at=now + timedelta(hours=23))
    if status != "validating":
        defaults["in_progress_at"] = now - timedelta(minutes=9)
    defaults.update(fields)
    batch = Batch.objects.create(**defaults)
    if with_requests:
        rows, offset = [], 0
        for i, line in enumerate(lines):
            row = BatchRequest(batch=batch, line=i + 1, custom_id=f"r{i}", offset=offset, length=len(line))
            offset += len(line) + 1
            if i < completed:
                row.status, row.status_code, row.output_tokens = "responded", 200, 10
                row.finished_at = now - timedelta(minutes=1)
            elif i < completed + failed:
                row.status, row.status_code = "responded", 400
                row.finished_at = now - timedelta(minutes=1)
            elif i < completed + failed + errored:
                row.status, row.error_code = "errored", "batch_cancelled"
                row.finished_at = now - timedelta(minutes=1)
            rows.append(row)
        BatchRequest.objects.bulk_create(rows)
    return batch
