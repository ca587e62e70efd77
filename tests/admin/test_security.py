"""Who may use the console: staff only (anonymous visitors and non-staff users get the login page), and every
action needs its CSRF token. django-q2's pages (schedules, queued and finished tasks) are read-only for everyone:
a Schedule's function is any dotted path, `os.system` included."""

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
    key, _ = api_key_create(name="k", project=project)
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
        (reverse("admin:batchserver_apikey_add"), {"name": "sneaky", "new_project": "x"}),
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
    user = make_user(
        django_user_model, "colleague", staff=False, perms=["batches_api.view_batch", "batches_api.change_batch"]
    )
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
    response = client.post(
        reverse("admin:batchserver_apikey_revoke", args=[quote(objects["key"].pk)]), {"csrfmiddlewaretoken": token}
    )
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


# ------------------------------------------------------------------------------------------------ django-q2
@pytest.fixture
def q_rows(db):
    """One row of every django-q2 model the console shows: our schedules, a finished, a failed, a queued task."""
    from django.utils import timezone
    from django_q.models import OrmQ, Schedule, Task

    from batchserver.schedules import install_schedules

    install_schedules()
    now = timezone.now()
    task = dict(func="files_api.tasks.delete_expired_files", started=now, stopped=now)
    return {
        "schedule": Schedule.objects.order_by("pk").first(),
        "success": Task.objects.create(id="s" * 32, name="done", success=True, **task),
        "failure": Task.objects.create(id="f" * 32, name="broke", success=False, **task),
        "ormq": OrmQ.objects.create(key="batchserver", payload="signed-package", lock=now),
    }


def q_change_posts(q_rows) -> list[tuple[str, str, dict]]:
    """(model, change URL, a hostile form) for every django-q2 row."""
    schedule = {
        "name": "pwned",
        "func": "os.system",
        "args": "'touch /tmp/pwned'",
        "schedule_type": "I",
        "minutes": "1",
        "repeats": "-1",
        "next_run_0": "2030-01-01",
        "next_run_1": "00:00:00",
        "cluster": "batchserver",
    }
    return [
        ("schedule", reverse("admin:django_q_schedule_change", args=[q_rows["schedule"].pk]), schedule),
        ("success", reverse("admin:django_q_success_change", args=[q_rows["success"].pk]), {"func": "os.system"}),
        ("failure", reverse("admin:django_q_failure_change", args=[q_rows["failure"].pk]), {"func": "os.system"}),
        ("ormq", reverse("admin:django_q_ormq_change", args=[q_rows["ormq"].pk]), {"key": "elsewhere"}),
    ]


def staff_with_every_permission(django_user_model):
    from django.contrib.auth.models import Permission

    user = make_user(django_user_model, "all-perms")
    user.user_permissions.set(Permission.objects.all())
    return user


def assert_q_rows_unchanged(q_rows):
    from django_q.models import OrmQ, Schedule, Task

    from batchserver.schedules import SCHEDULES

    assert sorted(Schedule.objects.values_list("name", "func")) == sorted(
        (name, func) for name, (func, _) in SCHEDULES.items()
    )
    assert Task.objects.count() == 2 and not Task.objects.filter(func="os.system").exists()
    assert list(OrmQ.objects.values_list("key", flat=True)) == ["batchserver"]


@pytest.mark.parametrize("who", ["staff with every permission", "superuser"])
def test_django_q_pages_are_read_only_for_everyone(who, q_rows, django_user_model, admin_user):
    client = login(admin_user if who == "superuser" else staff_with_every_permission(django_user_model))
    for model in ("schedule", "success", "failure", "ormq"):
        assert client.get(reverse(f"admin:django_q_{model}_changelist")).status_code == 200, model
        add = reverse(f"admin:django_q_{model}_add")
        assert client.get(add).status_code == 403, model
        assert client.post(add, {"name": "pwned", "func": "os.system", "schedule_type": "O"}).status_code == 403
    for model, url, form in q_change_posts(q_rows):
        page = client.get(url)
        assert page.status_code == 200, model
        assert 'name="func"' not in page.content.decode() and "_save" not in page.content.decode(), model
        assert client.post(url, form).status_code == 403, model
        delete = url.replace("/change/", "/delete/")
        assert client.post(delete, {"post": "yes"}).status_code == 403, model
    # No bulk action either (django-q2's own admin resubmits tasks and deletes rows from the list).
    for model in ("success", "failure", "schedule"):
        pk = q_rows[model].pk
        response = client.post(
            reverse(f"admin:django_q_{model}_changelist"),
            {"action": "delete_selected", "_selected_action": [pk], "post": "yes"},
        )
        assert response.status_code in (200, 302), model
        response = client.post(
            reverse(f"admin:django_q_{model}_changelist"), {"action": "resubmit_task", "_selected_action": [pk]}
        )
        assert response.status_code in (200, 302), model
    assert_q_rows_unchanged(q_rows)
