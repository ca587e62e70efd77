"""API keys: 401s in OpenAI's body; owners never see each other's files or batches (404, not 403)."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import wait_for_status
from tests.helpers import request_line, upload_batch_file


def test_missing_key_is_a_401_in_openai_shape(server):
    response = httpx.get(f"{server}/v1/files")
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert "You didn't provide an API key" in error["message"]


@pytest.mark.parametrize("header", ["Bearer sk-bs-not-a-real-key", "Basic abc", "Bearer"])
def test_invalid_key_is_a_401_invalid_api_key(server, header):
    response = httpx.get(f"{server}/v1/batches", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_revoked_key_is_refused_through_the_sdk(server, keys):
    revoked = OpenAI(base_url=f"{server}/v1", api_key=keys["revoked"], max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        revoked.files.list()
    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"


def test_other_owner_cannot_see_read_cancel_or_delete(client, other_client, db_access):
    from files_api.models import File

    file = upload_batch_file(client, [request_line("mine")])
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    batch = wait_for_status(client, batch.id, {"in_progress"}, timeout=30)

    for call in (
        lambda: other_client.files.retrieve(file.id),
        lambda: other_client.files.content(file.id),
        lambda: other_client.files.delete(file.id),
        lambda: other_client.batches.retrieve(batch.id),
        lambda: other_client.batches.cancel(batch.id),
        lambda: other_client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert file.id not in [f.id for f in other_client.files.list()]
    assert batch.id not in [b.id for b in other_client.batches.list()]
    # Nothing changed for the owner.
    assert client.batches.retrieve(batch.id).status == "in_progress"
    assert File.objects.filter(pk=file.id).exists()
    client.batches.cancel(batch.id)


def test_a_key_of_the_same_project_sees_the_same_objects(server, client, db_access):
    from batchserver.models import Project
    from batchserver.services import api_key_create

    _, raw = api_key_create(name="alice-second-key", project=Project.objects.get(name="alice"))
    second = OpenAI(base_url=f"{server}/v1", api_key=raw, max_retries=0)
    file = upload_batch_file(client, [request_line("shared")])
    assert second.files.retrieve(file.id).id == file.id


def test_apikey_command_creates_a_working_key_and_revokes_it(server, stack_env):
    import subprocess
    import sys

    from tests.conftest import ROOT

    created = subprocess.run(
        [sys.executable, "manage.py", "apikey", "create", "--name", "cli-key", "--new-project", "cli-key"],
        cwd=ROOT,
        env=stack_env,
        capture_output=True,
        text=True,
        check=True,
    )
    raw = created.stdout.strip()
    assert raw.startswith("sk-bs-")
    cli = OpenAI(base_url=f"{server}/v1", api_key=raw, max_retries=0)
    assert cli.files.list().data == []  # a new project owns nothing yet
    subprocess.run(
        [sys.executable, "manage.py", "apikey", "revoke", raw[:12]],
        cwd=ROOT,
        env=stack_env,
        check=True,
        capture_output=True,
    )
    with pytest.raises(openai.AuthenticationError):
        cli.files.list()


def test_keys_are_stored_hashed(keys, db_access):
    from batchserver.models import ApiKey

    stored = list(ApiKey.objects.values_list("prefix", "key_hash"))
    assert all(keys["alice"] not in (prefix, key_hash) for prefix, key_hash in stored)
    assert any(keys["alice"].startswith(prefix) for prefix, _ in stored)
