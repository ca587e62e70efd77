"""Limits in the console: a project's page sets its batches in flight, stored bytes and enqueued-token limits per
served model, and shows what it uses of them; an API key's page sets its requests per minute."""

from __future__ import annotations

from django.contrib.admin.utils import quote
from django.urls import reverse

FORMSET = "model_limits"


def project_form(**fields) -> dict:
    data = {
        "name": "team-a",
        "weight": "1",
        "priority": "normal",
        "max_batches_in_flight": "",
        "max_stored_bytes": "",
        f"{FORMSET}-TOTAL_FORMS": "0",
        f"{FORMSET}-INITIAL_FORMS": "0",
        "_save": "Save",
    }
    data.update(fields)
    return data


def page(project) -> str:
    return reverse("admin:batchserver_project_change", args=[quote(project.pk)])


def test_a_project_page_sets_its_limits_and_shows_their_use(admin_client, project):
    from batchserver.models import ProjectModelLimit
    from tests.admin.conftest import make_batch

    make_batch(project, model="fake-echo", enqueued_tokens=1234)
    response = admin_client.post(
        page(project),
        project_form(
            max_batches_in_flight="3",
            max_stored_bytes="1000000",
            **{
                f"{FORMSET}-TOTAL_FORMS": "1",
                f"{FORMSET}-0-model": "fake-echo",
                f"{FORMSET}-0-enqueued_tokens": "50000",
            },
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    project.refresh_from_db()
    assert (project.max_batches_in_flight, project.max_stored_bytes) == (3, 1_000_000)
    assert ProjectModelLimit.objects.get(project=project).enqueued_tokens == 50_000
    html = admin_client.get(page(project)).content.decode()
    assert "1,234 of 50,000" in html  # enqueued tokens of fake-echo, of its limit
    assert "1 of 3" in html  # batches in flight
    row = admin_client.get(reverse("admin:batchserver_project_changelist")).content.decode()
    assert "1,234" in row and "1 / 3" in row


def test_a_limit_for_a_model_not_served_is_refused(admin_client, project):
    response = admin_client.post(
        page(project),
        project_form(
            **{f"{FORMSET}-TOTAL_FORMS": "1", f"{FORMSET}-0-model": "gpt-9", f"{FORMSET}-0-enqueued_tokens": "5"}
        ),
    )
    assert response.status_code == 200
    assert "No model named “gpt-9” is served here" in response.content.decode()


def test_an_api_key_page_sets_its_rate_limit(admin_client, db):
    from batchserver.services import api_key_create

    key, _ = api_key_create(name="k", new_project="p")
    url = reverse("admin:batchserver_apikey_change", args=[quote(key.pk)])
    assert admin_client.post(url, {"name": "k", "rate_limit_rpm": "120", "_save": "Save"}).status_code == 302
    key.refresh_from_db()
    assert key.rate_limit_rpm == 120
    assert "120/min" in admin_client.get(reverse("admin:batchserver_apikey_changelist")).content.decode()
    assert admin_client.post(url, {"name": "k", "rate_limit_rpm": "0", "_save": "Save"}).status_code == 200
