"""Who may use the console: staff only (anonymous visitors and non-staff users get the login page), and every
action needs its CSRF token."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.test import Client
from django.urls import reverse

from tests.admin.conftest import login, make_batch, make_user, write_file


@pytest.fixture
def objects(project):
    from batchserver.services import api_key_create

    batch = make_batch(project, status="completed", total=2, completed=1, failed=1, with_requests=True)
    key, _ = api_key_create(name="k", project_name=project.name)
    return {"batch": batch, "file": batch.input_file, "key": key}


def console_urls(objects) -> list[str]:
    batch, file, key = quote(objects["batch"].pk), quote(objects["file"].pk), quote(objects["key"].pk)
    return [
        "/admin/",
        reverse("admin:batches_api_batch_changelist"),
        reverse("admin:batches_api_batch_change", args=[batch]),
        reverse("admin:files_api_file_changelist"),
        reverse("admin:files_api_file_change", args=[file]),
        reverse("admin:files_api_file_download", args=[file]),
        reverse("admin:batchserver_apikey_changelist"),
        reverse("admin:batchserver_apikey_add"),
        reverse("admin:batchserver_apikey_change", args=[key]),
        reverse("admin:batches_api_worker_changelist"),
    ]


def action_posts(objects) -> list[tuple[str, dict]]:
    batch, file, key = objects["batch"], objects["file"], objects["key"]
    return [
        (reverse("admin:batches_api_batch_cancel", args=[quote(batch.pk)]), {}),
        (reverse("admin:batches_api_batch_retry", args=[quote(batch.pk)]), {}),
        (reverse("admin:batches_api_batch_changelist"), {"action": "cancel_batches", "_selected_action": [batch.pk]}),
        (reverse("admin:files_api_file_delete", args=[quote(file.pk)]), {"post": "yes"}),
        (reverse("admin:batchserver_apikey_revoke", args=[quote(key.pk)]), {}),
        (reverse("admin:batchserver_apikey_add"), {"name": "sneaky", "project_name": "x"}),
    ]


def assert_login_page(response, url):
    assert response.status_code == 302, url
    assert response.url.startswith("/admin/login/"), (url, response.url)


def test_anonymous_visitors_get_the_login_page(objects):
    anonymous = Client()
    for url in console_urls(objects):
        assert_login_page(anonymous.get(url), url)
    for url, data in action_posts(objects):
        assert_login_page(anonymous.post(url, data), url)


def test_non_staff_users_get_the_login_page(objects, django_user_model):
    user = make_user(django_user_model, "colleague", staff=False,
                     perms=["batches_api.view_batch", "batches_api.change_batch"])
    client = login(user)
    for url in console_urls(objects):
        assert_login_page(client.get(url), url)
    for url, data in action_posts(objects):
        assert_login_page(client.post(url, data), url)
    objects["batch"].refresh_from_db()
    assert not objects["batch"].retries.exists()


def test_every_action_needs_the_csrf_token(objects, admin_user):
    from batchserver.models import ApiKey
    from files_api.models import File

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    for url, data in action_posts(objects):
        assert client.post(url, data).status_code == 403, url
    assert File.objects.filter(pk=objects["file"].pk).exists()
    assert not objects["batch"].retries.exists()
    assert ApiKey.objects.get(pk=objects["key"].pk).revoked_at is None
    assert not ApiKey.objects.filter(name="sneaky").exists()
    # With the token from the page, the same request works.
    page = client.get(reverse("admin:batchserver_apikey_change", args=[quote(objects["key"].pk)]))
    token = page.content.decode().split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    response = client.post(reverse("admin:batchserver_apikey_revoke", args=[quote(objects["key"].pk)]),
                           {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=objects["key"].pk).revoked_at is not None


def test_staff_without_model_permissions_see_nothing(objects, django_user_model):
    client = login(make_user(django_user_model, "bare-staff"))
    for url in console_urls(objects)[1:]:
        assert client.get(url).status_code == 403, url
    html = client.get("/admin/").content.decode()
    assert objects["batch"].pk not in html


def test_file_names_and_metadata_are_escaped_in_lists(admin_client, project):
    hostile = "<img src=x onerror=alert(1)>.jsonl"
    file = write_file(project, b"{}\n", filename=hostile)
    make_batch(project, input_file=file, metadata={"<b>k</b>": "<script>alert(2)</script>"})
    for url in (reverse("admin:files_api_file_changelist"), reverse("admin:batches_api_batch_changelist")):
        html = admin_client.get(url).content.decode()
        assert "<img src=x" not in html and "<script>alert(2)" not in html
