"""`manage.py project set-limits` and `manage.py apikey set-rate-limit`: a project's and a key's own limits, and
`default` to give one back to the server's default."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_set_limits_then_give_them_back_to_the_default(settings):
    from batchserver.models import Project, ProjectModelLimit

    settings.BATCHSERVER_MAX_STORED_BYTES = 2 * 1024**3
    Project.objects.create(name="team-a")
    shown = run(
        "project", "set-limits", "team-a", "--enqueued-tokens", "fake-echo=2,000,000", "--batches-in-flight", "20",
        "--stored-bytes", "1.5GB",
    )  # fmt: skip
    project = Project.objects.get(name="team-a")
    assert (project.max_batches_in_flight, project.max_stored_bytes) == (20, 1536 * 1024**2)
    assert ProjectModelLimit.objects.get(project=project, model="fake-echo").enqueued_tokens == 2_000_000
    assert "batches in flight 0 / 20\tstored 0 bytes / 1.5 GB" in shown
    assert "fake-echo\tenqueued tokens 0 / 2,000,000" in shown

    run("project", "set-limits", "team-a", "--enqueued-tokens", "fake-echo=default", "--stored-bytes", "default")
    project.refresh_from_db()
    assert project.max_stored_bytes is None and project.max_batches_in_flight == 20  # not named: kept
    assert not ProjectModelLimit.objects.filter(project=project).exists()
    assert "stored 0 bytes / 2.0 GB" in run("project", "list")  # the server's default


@pytest.mark.django_db
def test_unknown_projects_and_models_are_named_in_the_error():
    from batchserver.models import Project

    with pytest.raises(CommandError, match="No project named 'nobody'"):
        run("project", "set-limits", "nobody", "--batches-in-flight", "1")
    Project.objects.create(name="team-a")
    with pytest.raises(CommandError, match="No model named 'gpt-9' is served here. Served models: .*fake-echo"):
        run("project", "set-limits", "team-a", "--enqueued-tokens", "gpt-9=5")


@pytest.mark.django_db
def test_an_api_keys_rate_limit(settings):
    from batchserver.services import api_key_create

    settings.BATCHSERVER_RATE_LIMIT_RPM = 100
    key, _ = api_key_create(name="ci", new_project="team-a")
    assert "60 requests/min." in run("apikey", "set-rate-limit", key.prefix, "--rpm", "60")
    key.refresh_from_db()
    assert key.rate_limit_rpm == 60
    assert "100 requests/min (server default)" in run("apikey", "set-rate-limit", str(key.pk), "--rpm", "default")
    with pytest.raises(CommandError):
        run("apikey", "set-rate-limit", key.prefix, "--rpm", "0")
